"""What handlers and services share at run time, built once by the app factory or the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from billfold.config import Settings
from billfold.db import Database
from billfold.stripe_gateway import StripeGateway


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    # Jobs use `stripe`, with the full timeout and network retries; a request that waits on
    # Stripe inline (registration) uses `stripe_inline`, which gives up fast.
    stripe: StripeGateway
    stripe_inline: StripeGateway

    @classmethod
    def build(cls, settings: Settings, db: Database | None = None) -> Services:
        return cls(
            settings=settings,
            db=db or Database(settings.database_url),
            stripe=StripeGateway.from_settings(settings),
            stripe_inline=StripeGateway.from_settings(
                settings,
                timeout=settings.stripe_inline_timeout_seconds,
                max_network_retries=0,
            ),
        )
