"""Dunning: what happens after a renewal Stripe could not collect (see `service`)."""

from billfold.subscriptions.dunning.service import (
    CARD_JOB,
    REMINDERS_JOB,
    after_subscription_change,
    card_job,
    on_default_card,
    on_payment_problem,
    open_case,
    reminders_job,
    send_reminders,
    settle,
)

__all__ = [
    "CARD_JOB",
    "REMINDERS_JOB",
    "after_subscription_change",
    "card_job",
    "on_default_card",
    "on_payment_problem",
    "open_case",
    "reminders_job",
    "send_reminders",
    "settle",
]
