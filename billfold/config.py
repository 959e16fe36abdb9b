"""Billfold's settings, read once from the environment (and a `.env` file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billfold.kit.addresses import IPAddress, address_allowed


class PrivateUrls(StrEnum):
    """Which private addresses outbound webhook URLs may reach (webhooks/outbound/urls.py)."""

    NONE = "none"  # public addresses only
    LOOPBACK = "loopback"  # and this machine (development, tests)
    ALL = "all"  # and any private network (an in-house receiver)

    def allows(self, address: IPAddress) -> bool:
        """Whether an endpoint may be reached at this address (checked on the URL, and again
        on each address a delivery connects to)."""
        return address_allowed(
            address, loopback=self is not PrivateUrls.NONE, private=self is PrivateUrls.ALL
        )


class CustomerCreation(StrEnum):
    ON_REGISTRATION = "on_registration"
    ON_FIRST_PAYMENT = "on_first_payment"


class ProrationBehavior(StrEnum):
    """How a plan change bills the rest of the period (Stripe's `proration_behavior`)."""

    CREATE_PRORATIONS = "create_prorations"  # on the next invoice
    ALWAYS_INVOICE = "always_invoice"  # invoiced and charged at once
    NONE = "none"  # the new price from the next period on


class ChangeTiming(StrEnum):
    """When a plan change takes effect."""

    NOW = "now"
    PERIOD_END = "period_end"  # at the current period's (or trial's) end: downgrades only


class CustomerDeletion(StrEnum):
    DELETE = "delete"
    ARCHIVE = "archive"


class Settings(BaseSettings):
    """Every setting, named as the Stripe integration guides name them."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = Field(default="sqlite:///billfold.kit.db")
    # True when database_url goes through a transaction-pooling PgBouncer: no server-side
    # prepared statements (and set JOB_LISTEN_URL to a direct connection for LISTEN).
    database_transaction_pooler: bool = False

    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    # Unset means real Stripe; a URL points the SDK at a stand-in such as localstripe.
    stripe_api_base: str | None = None
    stripe_currency: str = "usd"
    stripe_timeout_seconds: float = Field(default=20.0, gt=0, le=120)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    # Registration waits this long for Stripe before leaving the link to the worker.
    stripe_inline_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_customer_creation: CustomerCreation = CustomerCreation.ON_REGISTRATION
    stripe_customer_deletion: CustomerDeletion = CustomerDeletion.DELETE

    jwt_secret: SecretStr | None = None
    jwt_expires_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)

    backend_url: str = "http://127.0.0.1:8000"

    # Accounts: whether an account whose e-mail is not verified yet gets its trial (and the
    # license e-mail) at sign-up or only once verified, and how long e-mailed links last.
    email_verification_required: bool = False
    email_verification_ttl_hours: int = Field(default=48, ge=1, le=24 * 30)
    password_reset_ttl_minutes: int = Field(default=30, ge=5, le=24 * 60)

    # Rate limits (`limits` notation: "10/minute;100/hour"), counted in the database so they
    # hold across server processes; per client address and per credential (or e-mail).
    rate_limits_enabled: bool = True
    rate_limit_login: str = "10/minute;100/hour"
    rate_limit_signup: str = "5/minute;30/hour"
    rate_limit_account_mail: str = "5/minute;30/hour"
    rate_limit_consume: str = "600000/minute"
    rate_limit_check: str = "600000/minute"

    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_backoff_base_seconds: float = Field(default=2.0, gt=0)
    job_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    job_poll_seconds: float = Field(default=0.5, gt=0)
    # Most jobs a worker claims at once (it claims fewer while jobs are slow).
    job_batch_size: int = Field(default=50, ge=1, le=1000)
    # PostgreSQL: wake idle workers with LISTEN/NOTIFY when a job is enqueued (else they poll).
    job_wakeup: bool = True
    # Where workers LISTEN: a direct PostgreSQL URL when database_url goes through a
    # transaction-pooling PgBouncer (LISTEN needs a session of its own); default database_url.
    job_listen_url: str | None = None
    # How long a Stripe customer creation may stay claimed before another try may take over.
    customer_link_lease_seconds: float = Field(default=60.0, gt=0)
    # The payments janitor runs this often, and settles payments and refunds left open
    # (`creating`, `pending`, …) for longer than its lease by asking Stripe.
    payment_janitor_interval_seconds: float = Field(default=300.0, gt=0)
    payment_janitor_lease_seconds: float = Field(default=900.0, gt=0)

    # Prepaid credits: the price of one credit for custom amounts, the custom bounds, and
    # the daily caps that stop a runaway auto-recharge loop.
    credits_unit_price: int = Field(default=1, ge=1, le=1_000_000)
    credits_custom_min: int = Field(default=100, ge=1)
    credits_custom_max: int = Field(default=1_000_000, ge=1)
    credits_max_recharges_per_day: int = Field(default=5, ge=0, le=1000)
    credits_max_recharge_spend_per_day: int = Field(default=100_000, ge=0)
    # Threads applying batched debits (each batch is one transaction). One per process measured
    # best: a second thread halves the batches and fights the event loop for the GIL.
    credits_consume_batch_threads: int = Field(default=1, ge=1, le=32)

    # The largest request body accepted (413 beyond): JSON API calls, and Stripe's webhook
    # events, which carry whole objects (an invoice with many lines) and so get more room.
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_webhook_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # How long an Idempotency-Key's record (and its kept answer) lives before it is purged.
    idempotency_retention_hours: int = Field(default=24, ge=1, le=24 * 90)

    # Whether each `billfold serve` process also runs a job worker (`--no-worker` clears it).
    serve_job_worker: bool = True

    # Licenses: the Ed25519 signing key (PEM, or base64 of the raw seed), public keys of
    # earlier keys that must still verify (comma-separated base64, or PEM blocks), and how
    # long past the paid period a license stays valid.
    license_private_key: SecretStr | None = None
    license_previous_public_keys: str = ""
    license_grace_days: int = Field(default=3, ge=0, le=60)
    license_trial_days: int = Field(default=14, ge=1, le=365)

    # Plan changes: how they prorate unless the call says.
    subscription_proration_behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS
    # When a downgrade (a plan costing less per year) takes effect unless the call says;
    # upgrades always take effect at once.
    subscription_downgrade_timing: ChangeTiming = ChangeTiming.NOW
    # Whether subscription Checkout shows a promotion-code field (Stripe's
    # `allow_promotion_codes`; the codes themselves are made in Stripe).
    checkout_allow_promotion_codes: bool = False

    # Dunning: after a renewal fails, reminders go out this many days after the first
    # failure (comma-separated), checked by a recurring job this often.
    dunning_reminder_days: str = Field(
        default="1,3,7", pattern=r"^\s*(\d{1,3}\s*(,\s*\d{1,3}\s*)*)?$"
    )
    dunning_check_interval_seconds: float = Field(default=3600.0, gt=0)

    # Pages (/billing for customers, /admin for operators): the brand they wear, how long a
    # sign-in lasts, how long a sign-in link minted by the host backend stays usable, and
    # whether cookies are Secure (cleared only by `billfold dev`, which serves plain http).
    brand_name: str = Field(default="Billfold", min_length=1, max_length=60)
    brand_logo_url: str | None = Field(default=None, pattern=r"^https?://[^\s\"'<>]+$")
    brand_accent_color: str = Field(default="#4f46e5", pattern=r"^#[0-9a-fA-F]{6}$")
    pages_session_hours: int = Field(default=12, ge=1, le=24 * 30)
    pages_link_minutes: int = Field(default=5, ge=1, le=60)
    pages_secure_cookies: bool = True
    # Outbound webhooks: the key encrypting endpoint secrets (base64 of 32 bytes; unset:
    # derived from JWT_SECRET), which private addresses endpoints may have, the request
    # timeout, the retry schedule (seconds after each failed try, jittered), how long an
    # endpoint may fail before it is disabled, and how long a rotated-out secret still signs.
    webhook_secrets_key: SecretStr | None = None
    webhook_allow_private_urls: PrivateUrls = PrivateUrls.NONE
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,50400,72000,86400"
    webhook_disable_after_hours: float = Field(default=120.0, gt=0)
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0)
    # A worker sends an endpoint's due deliveries in batches of up to this many; each worker
    # process has up to WEBHOOK_SEND_CONCURRENCY requests in flight (one customer's events
    # go one after another, in order).
    webhook_batch_size: int = Field(default=200, ge=1, le=1000)
    webhook_send_concurrency: int = Field(default=16, ge=1, le=64)

    mail_outbox_dir: Path = Path("mail-outbox")
    # SMTP when SMTP_HOST is set; otherwise each e-mail is written to MAIL_OUTBOX_DIR as .eml.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = 10
    mail_from: str = "Billfold <billing@billfold.local>"
    log_json: bool = False
    # uvicorn's access log, a plain-text line per request (`billfold dev` always writes it).
    # Off by default, as gunicorn's is: writing it cost the consume hot path about a tenth
    # of its CPU, and Billfold's own structured log lines carry the request ID.
    access_log: bool = False
    # /metrics answers only a bearer with this token; without one it is refused unless
    # METRICS_PUBLIC says it may be open (e.g. reachable only from the scraper's network).
    metrics_token: SecretStr | None = None
    metrics_public: bool = False

    @property
    def dunning_schedule(self) -> list[int]:
        """DUNNING_REMINDER_DAYS as whole days, ascending, without repeats or zero."""
        days = {int(part) for part in self.dunning_reminder_days.split(",") if part.strip()}
        return sorted(day for day in days if day > 0)

    @field_validator(
        "rate_limit_login",
        "rate_limit_signup",
        "rate_limit_account_mail",
        "rate_limit_consume",
        "rate_limit_check",
    )
    @classmethod
    def _limits_notation(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '10/minute;100/hour': {exc}") from exc
        return value

    @model_validator(mode="after")
    def _lease_outlives_stripe_calls(self) -> Settings:
        if self.customer_link_lease_seconds <= self.stripe_timeout_seconds:
            raise ValueError(
                "CUSTOMER_LINK_LEASE_SECONDS must exceed STRIPE_TIMEOUT_SECONDS, or two tries "
                "could create two Stripe customers for one user"
            )
        if self.payment_janitor_lease_seconds <= self.stripe_timeout_seconds:
            raise ValueError(
                "PAYMENT_JANITOR_LEASE_SECONDS must exceed STRIPE_TIMEOUT_SECONDS, or the "
                "janitor could give up on a payment whose intent is still being made"
            )
        return self

    @property
    def webhook_retry_delays(self) -> list[float]:
        """WEBHOOK_RETRY_SCHEDULE as seconds: the wait after the 1st, 2nd… failed try."""
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]

    @model_validator(mode="after")
    def _retry_schedule_parses(self) -> Settings:
        try:
            delays = self.webhook_retry_delays
        except ValueError as exc:
            raise ValueError("WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds") from exc
        if any(d < 0 for d in delays):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE may not have negative delays")
        return self

    def require(self, *names: str) -> None:
        """Stop start-up with a message naming every required setting that is missing."""
        missing = [n.upper() for n in names if getattr(self, n) in (None, "")]
        if missing:
            raise MissingSettings(missing)


class MissingSettings(RuntimeError):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(
            "Missing required setting(s): "
            + ", ".join(names)
            + ". Set them in the environment or in a .env file."
        )


def secret(value: SecretStr | None) -> str:
    """The plain text of a secret setting that `Settings.require` has checked."""
    if value is None:
        raise MissingSettings(["(a required secret)"])
    return value.get_secret_value()
