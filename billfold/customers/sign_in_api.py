"""HTTP routes for signing in and for the e-mailed account links (verify, reset password).

They live with the customers because they answer a customer and use its account links;
`auth/` below them keeps passwords, tokens and API keys."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from billfold.auth import service
from billfold.auth.deps import (
    NO_STORE,
    AnonymousWorkDep,
    RateLimitsDep,
    ServicesDep,
    TokensDep,
    WorkDep,
)
from billfold.customers import account_links
from billfold.customers.schemas import Password, SessionOut, UserOut
from billfold.customers.service import get_customer
from billfold.kit.envelope import ERROR_RESPONSES, ApiModel, Envelope, InputModel, ok

router = APIRouter(responses=ERROR_RESPONSES)


class LoginIn(InputModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=128)


@router.post("/auth/login", tags=["auth"], dependencies=[NO_STORE])
def login(
    body: LoginIn,
    session: AnonymousWorkDep,
    services: ServicesDep,
    tokens: TokensDep,
    limits: RateLimitsDep,
) -> Envelope[SessionOut]:
    # Per address in the middleware; per account here, against guessing from many addresses.
    # Both before the request's unit of work begins: the limit and the password check each
    # take a short transaction of their own.
    limits.enforce("login", "email", body.email)
    user = service.sign_in(services.db, session, body.email, body.password)
    customer = get_customer(session, service.Caller(user=user), user.id)
    return ok(
        SessionOut(
            user=UserOut.of(customer),
            access_token=tokens.issue(user),
            expires_in=int(tokens.lifetime.total_seconds()),
        )
    )


class TokenIn(InputModel):
    token: str = Field(min_length=10, max_length=200)


class VerifiedOut(ApiModel):
    email: str
    is_email_verified: bool


class SentOut(ApiModel):
    # The same answer whether or not the e-mail belongs to an account.
    accepted: bool = True


class ResetRequestIn(InputModel):
    email: str = Field(min_length=3, max_length=320)


class ResetConfirmIn(InputModel):
    token: str = Field(min_length=10, max_length=200)
    password: str = Password


class PasswordResetOut(ApiModel):
    password_reset: bool = True


@router.post("/auth/verify-email", tags=["auth"], summary="Follow an e-mail verification link")
def verify_email(
    body: TokenIn, session: AnonymousWorkDep, services: ServicesDep
) -> Envelope[VerifiedOut]:
    user = account_links.verify_email(services, session, body.token)
    return ok(VerifiedOut(email=user.email, is_email_verified=user.is_email_verified))


@router.post("/auth/verify-email/resend", status_code=202, tags=["auth"])
def resend_verification(work: WorkDep, services: ServicesDep) -> Envelope[SentOut]:
    account_links.resend_verification(work.session, services.settings, work.caller)
    return ok(SentOut())


@router.post("/auth/password-reset/request", status_code=202, tags=["auth"])
def request_password_reset(
    body: ResetRequestIn, session: AnonymousWorkDep, services: ServicesDep, limits: RateLimitsDep
) -> Envelope[SentOut]:
    # Before the unit of work begins: the limit takes a short transaction of its own.
    limits.enforce("account_mail", "email", body.email)
    account_links.request_password_reset(session, services.settings, body.email)
    return ok(SentOut())


@router.post("/auth/password-reset/confirm", tags=["auth"])
def confirm_password_reset(
    body: ResetConfirmIn, session: AnonymousWorkDep, services: ServicesDep
) -> Envelope[PasswordResetOut]:
    account_links.reset_password(services, session, body.token, body.password)
    return ok(PasswordResetOut())
