"""What handlers and services share at run time, built once by the app factory or the CLI."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from billfold.config import MissingSettings, Settings
from billfold.kit.db import Database
from billfold.kit.deadline_http import ThreadClients, deadline_transport
from billfold.kit.memo import Memo
from billfold.kit.signing_keys import SigningKeys
from billfold.kit.wiring import Wiring
from billfold.stripe_gateway import StripeGateway


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    # Jobs use `stripe`, with the full timeout and network retries; a request that waits on
    # Stripe inline uses `stripe_inline`, which gives up fast (`for_requests`).
    stripe: StripeGateway
    stripe_inline: StripeGateway
    # The keys that sign (and verify) license tokens.
    licenses: SigningKeys
    # Send outbound webhooks, a client per sender thread: WEBHOOK_TIMEOUT_SECONDS, keep-alive,
    # never follows redirects.
    webhook_http: ThreadClients
    # The threads that send webhook batches' requests (WEBHOOK_SEND_CONCURRENCY of them).
    webhook_senders: ThreadPoolExecutor
    # How the domains plug into each other (sign-up hooks, payment purposes, event handlers):
    # built by billfold/registry.py `build_wiring`, never registered at import.
    wiring: Wiring
    # Derived values kept between requests while what they depend on is unchanged (the
    # signed license revocation list); shared by `for_requests`.
    memo: Memo = field(default_factory=Memo)

    def for_requests(self) -> Services:
        """These services as HTTP routes get them: a person is waiting, so every Stripe call
        gives up after the inline timeout (503 `stripe_unavailable`), never the jobs' one."""
        return replace(self, stripe=self.stripe_inline)

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database | None = None,
        *,
        wiring: Wiring,
        stripe_http: Callable[[float], Any] | None = None,
    ) -> Services:
        """`stripe_http(timeout)` makes the SDK's HTTP client (None: the SDK's own)."""
        return cls(
            settings=settings,
            db=db
            or Database(
                settings.database_url, transaction_pooler=settings.database_transaction_pooler
            ),
            stripe=StripeGateway.from_settings(settings, http_factory=stripe_http),
            stripe_inline=StripeGateway.from_settings(
                settings,
                timeout=settings.stripe_inline_timeout_seconds,
                max_network_retries=0,
                http_factory=stripe_http,
            ),
            licenses=license_keys(settings),
            webhook_http=_webhook_clients(settings),
            webhook_senders=ThreadPoolExecutor(
                max_workers=settings.webhook_send_concurrency, thread_name_prefix="webhook-send"
            ),
            wiring=wiring,
        )


def _webhook_clients(settings: Settings) -> ThreadClients:
    # One TLS context for all the threads' clients: loading the CA certificates costs tens of
    # milliseconds of CPU (holding the GIL), too much for each sender thread.
    tls = httpx.create_ssl_context()
    return ThreadClients(lambda: _webhook_client(settings, tls))


def _webhook_client(settings: Settings, tls: ssl.SSLContext) -> httpx.Client:
    return httpx.Client(
        timeout=settings.webhook_timeout_seconds,
        follow_redirects=False,
        # Never a proxy from HTTP(S)_PROXY/ALL_PROXY: events go straight to the endpoint,
        # through the deadline-keeping transport below.
        trust_env=False,
        # Each try ends by its deadline, however the receiver trickles (kit/deadline_http).
        # One thread sends one request at a time: the rest are kept-alive connections to
        # other endpoints.
        # Every address it connects to is checked against WEBHOOK_ALLOW_PRIVATE_URLS, so a DNS
        # answer changed since the URL's check cannot lead a delivery to a private address.
        transport=deadline_transport(
            httpx.Limits(max_connections=8, max_keepalive_connections=8),
            tls,
            allow_address=settings.webhook_allow_private_urls.allows,
        ),
    )


def license_keys(settings: Settings) -> SigningKeys:
    """The license signing keys the settings name; MissingSettings without a private key."""
    if settings.license_private_key is None:
        raise MissingSettings(["LICENSE_PRIVATE_KEY"])
    return SigningKeys.load(
        settings.license_private_key.get_secret_value(), settings.license_previous_public_keys
    )
