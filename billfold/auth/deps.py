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


def _anonymous_work(services: ServicesDep) -> Iterator[Session]:
    # The same for a route without a caller (a link from an e-mail, the public revocation
    # list). The transaction begins at its first statement, not here: a rate limit checked
    # first in the route (its own short transaction) finds no write lock held.
    with services.db.transaction() as session:
        yield session


# Who may do what: one check per role, shared by the caller alone and the unit of work.
def _require_admin(caller: Caller) -> None:
    if caller.user is None or not caller.user.is_admin:
        raise Forbidden("Only an admin may do this", code="admin_only")


def _require_privileged(caller: Caller) -> None:
    if not caller.is_privileged:
        raise Forbidden("Only an admin or a service key may do this", code="admin_only")


_CallerWork = Annotated[RequestWork, Depends(_request_work, scope="function")]


async def _admin_work(work: _CallerWork) -> RequestWork:
    _require_admin(work.caller)
    return work


async def _privileged_work(work: _CallerWork) -> RequestWork:
    _require_privileged(work.caller)
    return work


async def _privileged(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    _require_privileged(caller)
    return caller


async def _admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    _require_admin(caller)
    return caller


# The caller alone, in a transaction of its own: for routes that call one service function
# owning its transactions (around a Stripe call), or that touch no database.
CallerDep = Annotated[Caller, Depends(_caller)]
PrivilegedDep = Annotated[Caller, Depends(_privileged)]
AdminDep = Annotated[Caller, Depends(_admin)]
# The request as one transaction (caller lookup and the route's work): see README "Layout".
WorkDep = _CallerWork
PrivilegedWorkDep = Annotated[RequestWork, Depends(_privileged_work, scope="function")]
AdminWorkDep = Annotated[RequestWork, Depends(_admin_work, scope="function")]
# The same without a caller: the session of a route anyone may call.
AnonymousWorkDep = Annotated[Session, Depends(_anonymous_work, scope="function")]
