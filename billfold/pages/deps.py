"""FastAPI dependencies of the pages: the renderer, who is signed in, a CSRF-checked form.

The billing pages (`billfold/pages/billing/`) and the operator console (`/admin`) both use
these, so sign-in, sessions and CSRF are one mechanism."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from billfold.auth.deps import ServicesDep
from billfold.auth.service import Caller
from billfold.kit.errors import InvalidInput, NotFound, Unauthorized
from billfold.pages import sessions
from billfold.pages.rendering import Pages
from billfold.pages.security import CSRF_FIELD

M = TypeVar("M", bound=BaseModel)


class SignInRequired(Unauthorized):
    """No live session: page routes answer with a redirect to the sign-in page."""

    code = "sign_in_required"


async def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


PagesDep = Annotated[Pages, Depends(_pages)]


def _lookup(request: Request, session: Session) -> sessions.SignedIn:
    found = sessions.signed_in(session, request.cookies.get(sessions.SESSION_COOKIE))
    if found is None:
        raise SignInRequired("Please sign in")
    request.state.signed_in = found  # the templates show who is signed in
    return found


def _signed_in(request: Request, services: ServicesDep) -> sessions.SignedIn:
    """Who is signed in, in a short transaction of its own: for pages whose work calls
    Stripe (a named service function then owns its transactions around the call)."""
    with services.db.transaction() as session:
        return _lookup(request, session)


SignedInDep = Annotated[sessions.SignedIn, Depends(_signed_in)]


async def _caller(signed: SignedInDep) -> Caller:
    return Caller(user=signed.user)


def _not_for_customers(caller: Caller) -> Caller:
    # An operator page does not exist for a customer: 404, as for another customer's IDs.
    if caller.user is None or not caller.user.is_admin:
        raise NotFound("No such page")
    return caller


async def _admin(signed: SignedInDep) -> Caller:
    return _not_for_customers(Caller(user=signed.user))


# The signed-in customer as the services know callers (the same rules as a JWT's user).
PageCallerDep = Annotated[Caller, Depends(_caller)]
# The signed-in operator (the console's pages).
PageAdminDep = Annotated[Caller, Depends(_admin)]


@dataclass(frozen=True)
class PageWork:
    """A page request's one unit of work: its session, and the signed-in caller looked up
    in it (the pages' `WorkDep`, see README "Who owns a transaction")."""

    session: Session
    caller: Caller


def _page_work(request: Request, services: ServicesDep) -> Iterator[PageWork]:
    # One transaction from the sign-in lookup to the page's last write: it commits when the
    # route returns, before the answer is sent (scope="function"), and rolls back if it
    # raises. A page taking it calls no Stripe and opens no transaction of its own.
    with services.db.transaction() as session:
        work = PageWork(session, Caller(user=_lookup(request, session).user))
        try:
            yield work
        except BaseException:
            # The error page still shows who is signed in: keep what was loaded as it is,
            # rather than let the rollback expire it in a session about to close.
            session.expunge_all()
            raise


async def _admin_work(
    work: Annotated[PageWork, Depends(_page_work, scope="function")],
) -> PageWork:
    _not_for_customers(work.caller)
    return work


# A customer's page as one transaction (sign-in lookup, reads and writes).
PageWorkDep = Annotated[PageWork, Depends(_page_work, scope="function")]
# An operator's page as one transaction.
AdminPageWorkDep = Annotated[PageWork, Depends(_admin_work, scope="function")]


async def _checked_form(request: Request, pages: PagesDep) -> FormData:
    form = await request.form()
    token = form.get(CSRF_FIELD)
    pages.security.check_csrf(request, token if isinstance(token, str) else None)
    return form


# A posted form whose CSRF token was checked; every page POST takes one.
FormDep = Annotated[FormData, Depends(_checked_form)]


def field(form: FormData, name: str) -> str:
    """A form field as text ('' when missing)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


_LABELS = {"email": "E-mail", "password": "Password", "name": "Name"}


def validated(model: type[M], values: dict[str, object]) -> M:
    """The form's values checked by the API's own input model; a person reads what is wrong."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            label = _LABELS.get(name, name.replace("_", " ").capitalize())
            problems.append(f"{label}: {error['msg'].removeprefix('Value error, ')}")
        raise InvalidInput(". ".join(problems) + ".") from None
