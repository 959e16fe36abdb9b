"""The pages the account e-mails link to: verifying an e-mail address and resetting a
forgotten password (the links carry a single-use token; a GET only shows a form, so a mail
scanner fetching the link does not use it up), and asking for a reset link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from billfold.auth.deps import AnonymousWorkDep, RateLimitsDep, ServicesDep
from billfold.customers import account_links
from billfold.customers.sign_in_api import ResetConfirmIn
from billfold.kit.errors import BillfoldError
from billfold.pages.deps import FormDep, PagesDep, field, validated

router = APIRouter(include_in_schema=False)
TokenQuery = Annotated[str, Query(max_length=200)]


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


# The API's limits on these pages, checked before the page's unit of work opens (the limits'
# counters are transactions of their own); a refusal is shown on the form, not raised.
def _per_address(request: Request, limits: RateLimitsDep) -> BillfoldError | None:
    try:
        limits.enforce("account_mail", "address", _address(request))
    except BillfoldError as exc:
        return exc
    return None


def _per_email(form: FormDep, limits: RateLimitsDep) -> BillfoldError | None:
    try:
        limits.enforce("account_mail", "email", field(form, "email"))
    except BillfoldError as exc:
        return exc
    return None


AddressLimited = Annotated[BillfoldError | None, Depends(_per_address)]
EmailLimited = Annotated[BillfoldError | None, Depends(_per_email)]


@router.get("/account/verify-email")
def verify_page(request: Request, pages: PagesDep, token: TokenQuery = "") -> Response:
    return pages.render(request, "account/verify.html", token=token)


@router.post("/account/verify-email")
def verify(
    request: Request,
    form: FormDep,
    refused: AddressLimited,
    session: AnonymousWorkDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    try:
        if refused is not None:
            raise refused
        account_links.verify_email(services, session, field(form, "token"))
    except BillfoldError as exc:
        session.rollback()  # nothing of a refused form is kept
        return pages.render(
            request, "account/verify.html", status_code=exc.status_code, token="", error=exc.message
        )
    return pages.redirect("/billing", notice="Your e-mail address is verified.")


@router.get("/account/reset-password")
def reset_page(request: Request, pages: PagesDep, token: TokenQuery = "") -> Response:
    return pages.render(request, "account/reset.html", token=token)


@router.post("/account/reset-password")
def reset(
    request: Request,
    form: FormDep,
    refused: AddressLimited,
    session: AnonymousWorkDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    token = field(form, "token")
    try:
        if refused is not None:
            raise refused
        body = validated(
            ResetConfirmIn, {"token": token, "password": str(form.get("password") or "")}
        )
        account_links.reset_password(services, session, body.token, body.password)
    except BillfoldError as exc:
        session.rollback()  # nothing of a refused form is kept
        return pages.render(
            request,
            "account/reset.html",
            status_code=exc.status_code,
            token=token,
            error=exc.message,
        )
    return pages.redirect("/billing/sign-in", notice="Your password is changed: sign in with it.")


@router.get("/billing/forgot-password")
def forgot_page(request: Request, pages: PagesDep) -> Response:
    return pages.render(request, "account/forgot.html")


@router.post("/billing/forgot-password")
def forgot(
    request: Request,
    form: FormDep,
    refused: EmailLimited,
    session: AnonymousWorkDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    email = field(form, "email")
    try:
        if refused is not None:
            raise refused
        account_links.request_password_reset(session, services.settings, email)
    except BillfoldError as exc:
        session.rollback()  # nothing of a refused form is kept
        return pages.render(
            request, "account/forgot.html", status_code=exc.status_code, error=exc.message
        )
    return pages.redirect(
        "/billing/sign-in",
        notice="If an account uses this e-mail, we sent it a link to choose a new password.",
    )
