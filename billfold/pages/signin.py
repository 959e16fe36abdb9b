"""Getting into the pages: sign in, sign up, sign out, and the host backend's single-use
sign-in links (`POST /billing/sessions`, then the customer opens the URL it answers)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field, HttpUrl
from starlette.responses import Response

from billfold.auth import service as auth
from billfold.auth.deps import (
    NO_STORE,
    AnonymousWorkDep,
    PrivilegedWorkDep,
    RateLimitsDep,
    ServicesDep,
)
from billfold.auth.models import User
from billfold.customers.registration import sign_up
from billfold.customers.schemas import RegisterIn
from billfold.customers.service import acting_customer
from billfold.kit.envelope import ERROR_RESPONSES, ApiModel, Envelope, InputModel, ok
from billfold.kit.errors import BillfoldError
from billfold.pages import sessions
from billfold.pages.deps import FormDep, PagesDep, field, validated
from billfold.services import Services

router = APIRouter(include_in_schema=False)
api = APIRouter(responses=ERROR_RESPONSES)
NextQuery = Annotated[str, Query(max_length=500)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only our own pages (never an open redirect)."""
    if target and target.startswith(("/billing", "/admin")) and "//" not in target:
        return target
    return "/billing"


def _lifetime(services: Services) -> timedelta:
    return timedelta(hours=services.settings.pages_session_hours)


def _signed_in_response(pages: PagesDep, services: Services, token: str, target: str) -> Response:
    """To `target`, with the new session's cookie."""
    lifetime = _lifetime(services)
    response = pages.redirect(target)
    pages.set_cookie(
        response, sessions.SESSION_COOKIE, token, max_age=int(lifetime.total_seconds())
    )
    return response


@router.get("/billing/sign-in")
def sign_in_page(request: Request, pages: PagesDep, next: NextQuery = "/billing") -> Response:
    return pages.render(request, "sign_in.html", next=safe_next(next), email="")


def _guessing_limits(
    request: Request, form: FormDep, limits: RateLimitsDep
) -> BillfoldError | None:
    """The API's limits on guessing (per address and per account), checked before the page's
    unit of work opens: the limits' counters are transactions of their own."""
    try:
        limits.enforce("login", "address", request.client.host if request.client else "")
        limits.enforce("login", "email", field(form, "email"))
    except BillfoldError as exc:
        return exc
    return None


@router.post("/billing/sign-in")
def sign_in(
    request: Request,
    form: FormDep,
    refused: Annotated[BillfoldError | None, Depends(_guessing_limits)],
    session: AnonymousWorkDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    email, target = field(form, "email"), safe_next(field(form, "next"))
    try:
        if refused is not None:
            raise refused
        # The hash is checked outside any transaction; `session` has not begun yet.
        user = auth.sign_in(services.db, session, email, str(form.get("password") or ""))
    except BillfoldError as exc:
        return pages.render(
            request,
            "sign_in.html",
            status_code=exc.status_code,
            next=target,
            email=email,
            error=exc.message,
        )
    token = sessions.start_session(session, user, lifetime=_lifetime(services), return_url=None)
    return _signed_in_response(pages, services, token, target)


@router.get("/billing/sign-up")
def sign_up_page(request: Request, pages: PagesDep) -> Response:
    return pages.render(request, "sign_up.html", values={})


@router.post("/billing/sign-up")
def sign_up_submit(
    request: Request, form: FormDep, pages: PagesDep, services: ServicesDep, limits: RateLimitsDep
) -> Response:
    values = {k: field(form, k) for k in ("name", "email", "company_name")}
    try:
        limits.enforce("signup", "address", request.client.host if request.client else "")
        body = validated(
            RegisterIn,
            {
                **values,
                "company_name": values["company_name"] or None,
                "password": str(form.get("password") or ""),
            },
        )
        customer = sign_up(
            services,
            name=body.name,
            email=str(body.email),
            password=body.password,
            company_name=body.company_name,
        )
    except BillfoldError as exc:
        return pages.render(
            request, "sign_up.html", status_code=exc.status_code, values=values, error=exc.message
        )
    token = sessions.open_session(
        services, customer.user, lifetime=_lifetime(services), return_url=None
    )
    return _signed_in_response(pages, services, token, "/billing")


@router.post("/billing/sign-out")
def sign_out(
    request: Request, _form: FormDep, session: AnonymousWorkDep, pages: PagesDep
) -> Response:
    sessions.end_session(session, request.cookies.get(sessions.SESSION_COOKIE))
    response = pages.redirect("/billing/sign-in", notice="You are signed out.")
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


@router.get("/billing/session/{token}")
def open_link(
    token: str, session: AnonymousWorkDep, pages: PagesDep, services: ServicesDep
) -> Response:
    """A link minted by the host backend: used once, it signs the customer in."""
    link = sessions.redeem_link(session, token)
    user = session.get(User, link.user_id)
    if user is None or user.deleted_at is not None:
        raise sessions.LinkUnusable("This account no longer exists.")
    started = sessions.start_session(
        session, user, lifetime=_lifetime(services), return_url=link.return_url
    )
    return _signed_in_response(pages, services, started, "/billing")


class LinkIn(InputModel):
    customer_id: str = Field(max_length=40)
    return_url: HttpUrl | None = None


class LinkOut(ApiModel):
    url: str
    expires_at: datetime


@api.post("/billing/sessions", status_code=201, tags=["billing pages"], dependencies=[NO_STORE])
def mint_link(body: LinkIn, work: PrivilegedWorkDep, services: ServicesDep) -> Envelope[LinkOut]:
    """A single-use URL that signs the customer in to the billing pages (expires in minutes)."""
    settings = services.settings
    customer = acting_customer(work.session, work.caller, body.customer_id)
    link, token = sessions.mint_link(
        work.session,
        customer.user,
        return_url=str(body.return_url) if body.return_url else None,
        lifetime=timedelta(minutes=settings.pages_link_minutes),
        actor=work.caller.actor,
    )
    base = settings.backend_url.rstrip("/")
    return ok(LinkOut(url=f"{base}/billing/session/{token}", expires_at=link.expires_at))
