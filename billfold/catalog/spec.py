"""The catalog file: its shape, read from TOML with every mistake named, and written back."""

from __future__ import annotations

import json
import tomllib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from billfold.kit.errors import InvalidInput
from billfold.kit.money import ISO_4217

Amount = Annotated[StrictInt, Field(ge=0, le=99_999_999)]  # Stripe's unit_amount ceiling
Name = Annotated[str, Field(min_length=1, max_length=200)]


class CatalogInvalid(InvalidInput):
    code = "catalog_invalid"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Features(_Strict):
    limits: dict[str, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)
    flags: dict[str, StrictBool] = Field(default_factory=dict)


class PlanSpec(_Strict):
    code: str = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9_-]+$")
    name: Name
    interval: str = Field(default="month", pattern=r"^(day|week|month|year)$")
    trial_days: Annotated[StrictInt, Field(ge=0, le=365)] = 0
    # Minor units per currency ({"usd": 900}); none for a free plan such as the trial.
    prices: dict[str, Amount] = Field(default_factory=dict)
    features: Features = Field(default_factory=Features)
    active: StrictBool = True


class CreditPackageSpec(_Strict):
    name: Name
    credits: Annotated[StrictInt, Field(gt=0)]
    price: Amount
    currency: str
    active: StrictBool = True


class ProductSpec(_Strict):
    name: Name
    description: str | None = Field(default=None, max_length=2000)
    unit_amount: Amount
    currency: str
    # The stock a new product starts with; apply never resets the stock of an existing one.
    stock: Annotated[StrictInt, Field(ge=0)] = 0
    active: StrictBool = True


class Catalog(_Strict):
    plans: list[PlanSpec] = Field(default_factory=list)
    credit_packages: list[CreditPackageSpec] = Field(default_factory=list)
    products: list[ProductSpec] = Field(default_factory=list)


def parse_catalog(text: str) -> Catalog:
    """The catalog a TOML text declares; `CatalogInvalid` names the first mistakes."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogInvalid(f"The catalog is not valid TOML: {exc}") from exc
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        raise CatalogInvalid("The catalog has mistakes: " + "; ".join(problems)) from exc
    _check_currencies(catalog)
    _check_unique(catalog)
    return catalog


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(
        ".[", "["
    )


def _check_currencies(catalog: Catalog) -> None:
    found = [(f"plans[{i}].prices.{c}", c) for i, p in enumerate(catalog.plans) for c in p.prices]
    found += [
        (f"credit_packages[{i}].currency", p.currency)
        for i, p in enumerate(catalog.credit_packages)
    ]
    found += [(f"products[{i}].currency", p.currency) for i, p in enumerate(catalog.products)]
    for where, currency in found:
        if currency not in ISO_4217:
            raise CatalogInvalid(
                f"{where}: unknown currency {currency!r} (an ISO 4217 code in lower case, "
                "such as 'usd')",
                code="unknown_currency",
            )


def _check_unique(catalog: Catalog) -> None:
    for section, keys in (
        ("plans", [p.code for p in catalog.plans]),
        ("credit_packages", [p.name for p in catalog.credit_packages]),
        ("products", [p.name for p in catalog.products]),
    ):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise CatalogInvalid(f"{section}: {key!r} is declared twice")
            seen.add(key)


def to_toml(catalog: Catalog) -> str:
    """The catalog as TOML that `parse_catalog` reads back to the same catalog."""
    lines = ["# Billfold catalog: `billfold catalog apply FILE` makes Stripe and Billfold agree."]
    for section, items in (
        ("plans", catalog.plans),
        ("credit_packages", catalog.credit_packages),
        ("products", catalog.products),
    ):
        for item in items:
            lines += ["", f"[[{section}]]"]
            for key, value in item.model_dump(exclude_none=True).items():
                lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    """A TOML value of the few kinds a catalog holds (inline tables for maps)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)
