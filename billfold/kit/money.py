"""Money is integer minor units plus an ISO 4217 currency: the currencies we accept, and
money as text for people."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

# ISO 4217's currencies in circulation (lower case, as Stripe writes them); its fund codes,
# precious metals, testing and "no currency" codes are not money anyone pays with.
_CIRCULATING = """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd btn bwp
    byn bzd cad cdf chf clp cny cop crc cuc cup cve czk djf dkk dop dzd egp ern etb eur fjd fkp
    gbp gel ghs gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd jod jpy kes kgs
    khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr
    mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf
    sar sbd scr sdg sek sgd shp sle sll sos srd ssp stn svc syp szl thb tjs tmt tnd top try ttd
    twd tzs uah ugx usd uyu uzs ved ves vnd vuv wst xaf xcd xcg xof xpf yer zar zmw zwg zwl
"""
ISO_4217 = frozenset(_CIRCULATING.split())


def _known_currency(value: str) -> str:
    code = value.lower()
    if code not in ISO_4217:
        raise ValueError("not an ISO 4217 currency code")
    return code


# A currency in a request: three letters, any case, that ISO 4217 knows; kept lower case.
Currency = Annotated[
    str, Field(pattern=r"^[A-Za-z]{3}$", examples=["usd"]), AfterValidator(_known_currency)
]

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
