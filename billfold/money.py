"""Money is integer minor units plus an ISO currency; this turns it into text for people."""

from __future__ import annotations

# Currencies whose minor unit is the major unit (Stripe's list of zero-decimal currencies).
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)


def format_money(amount: int, currency: str) -> str:
    """`1234, "usd"` → `12.34 USD`; `500, "jpy"` → `500 JPY`."""
    code = currency.upper()
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount:,} {code}"
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 100)
    return f"{sign}{major:,}.{minor:02d} {code}"
