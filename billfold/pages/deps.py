"""FastAPI dependencies of the pages: the renderer, who is signed in, a CSRF-checked form.

The billing pages (`billfold/pages/billing/`) and the operator console (`/admin`) both use
these, so sign-in, sessions and CSRF are one mechanism."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
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


def _signed_in(request: Request, services: ServicesDep) -> sessions.SignedIn:
    with services.db.transaction() as session:
        found = sessions.signed_in(session, request.cookies.get(sessions.SESSION_COOKIE))
    if found is None:
        raise SignInRequired("Please sign in")
    request.state.signed_in = found  # the templates show who is signed in
    return found


SignedInDep = Annotated[sessions.SignedIn, Depends(_signed_in)]


async def _caller(signed: SignedInDep) -> Caller:
    return Caller(user=signed.user)


async def _admin(signed: SignedInDep) -> Caller:
    # An operator page does not exist for a customer: 404, as for another customer's IDs.
    if not signed.user.is_admin:
        raise NotFound("No such page")
    return Caller(user=signed.user)


# The signed-in customer as the services know callers (the same rules as a JWT's user).
PageCallerDep = Annotated[Caller, Depends(_caller)]
# The signed-in operator (the console's pages).
PageAdminDep = Annotated[Caller, Depends(_admin)]


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
