"""FastAPI dependencies declared once: the shared services, and who is calling.

The ones that do no I/O are `async def`: FastAPI runs a plain `def` dependency in a worker
thread, a hop that costs more than the dependency itself on every request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from billfold.auth.service import Caller, TokenIssuer, credential_from_header, resolve_caller
from billfold.kit.errors import Forbidden
from billfold.ratelimits.limiter import Limiter, Rule
from billfold.services import Services

_bearer = HTTPBearer(auto_error=False, description="A user's JWT or a service API key")


async def _services(request: Request) -> Services:
    """The services with the inline Stripe gateway: a person waits on every route."""
    services: Services = request.app.state.request_services
    return services


async def _tokens(request: Request) -> TokenIssuer:
    tokens: TokenIssuer = request.app.state.tokens
    return tokens


class RateLimits:
    """The process's limiter and its rules, for limits on a value in the body (an e-mail)."""

    def __init__(self, limiter: Limiter, rules: dict[str, Rule]) -> None:
        self.limiter = limiter
        self.rules = rules

    def enforce(self, rule: str, scope: str, who: str) -> None:
        self.limiter.enforce(self.rules[rule], scope, who.strip().lower())


async def _limits(request: Request) -> RateLimits:
    return RateLimits(request.app.state.limiter, request.app.state.rate_rules)


async def _no_store(response: Response) -> None:
    """An answer carrying a credential (a token, an API key) is never cached, and never kept
    by the idempotency store, which reads this header (RFC 6749 §5.1 asks it of tokens)."""
    response.headers["Cache-Control"] = "no-store"


# `dependencies=[NO_STORE]` on every route whose answer carries a credential.
NO_STORE = Depends(_no_store)

ServicesDep = Annotated[Services, Depends(_services)]
TokensDep = Annotated[TokenIssuer, Depends(_tokens)]
RateLimitsDep = Annotated[RateLimits, Depends(_limits)]


async def _credential(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # for OpenAPI
) -> str:
    return credential_from_header(request.headers.get("authorization"))


# The raw bearer credential, for routes that resolve the caller themselves (in bulk).
CredentialDep = Annotated[str, Depends(_credential)]


def _caller(services: ServicesDep, tokens: TokensDep, credential: CredentialDep) -> Caller:
    """The caller alone, in a short transaction of its own: for routes whose work cannot be
    one transaction (a Stripe call in between) or is a service function's own."""
    with services.db.transaction() as session:
        return resolve_caller(session, credential, tokens)


@dataclass(frozen=True)
class RequestWork:
    """The request's one unit of work: its session, and the caller looked up in it."""

    session: Session
    caller: Caller


def _request_work(
    services: ServicesDep, tokens: TokensDep, credential: CredentialDep
) -> Iterator[RequestWork]:
    # One transaction from the caller lookup to the route's last write: it commits when the
    # route returns, before the answer is sent (scope="function"), and rolls back if it
    # raises. A route taking it calls no Stripe and opens no transaction of its own.
    with services.db.transaction() as session:
        yield RequestWork(session, resolve_caller(session, credential, tokens))


async def _admin_work(
    work: Annotated[RequestWork, Depends(_request_work, scope="function")],
) -> RequestWork:
    if work.caller.user is None or not work.caller.user.is_admin:
        raise Forbidden("Only an admin may do this", code="admin_only")
    return work


def _only_privileged(caller: Caller) -> Caller:
    if not caller.is_privileged:
        raise Forbidden("Only an admin or a service key may do this", code="admin_only")
    return caller


async def _privileged(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    return _only_privileged(caller)


async def _privileged_work(
    work: Annotated[RequestWork, Depends(_request_work, scope="function")],
) -> RequestWork:
    _only_privileged(work.caller)
    return work


async def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if caller.user is None or not caller.user.is_admin:
        raise Forbidden("Only an admin may do this", code="admin_only")
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
PrivilegedDep = Annotated[Caller, Depends(_privileged)]
AdminDep = Annotated[Caller, Depends(_admin)]
# The request as one transaction (caller lookup and the route's work): see README "Layout".
WorkDep = Annotated[RequestWork, Depends(_request_work, scope="function")]
AdminWorkDep = Annotated[RequestWork, Depends(_admin_work, scope="function")]
PrivilegedWorkDep = Annotated[RequestWork, Depends(_privileged_work, scope="function")]
