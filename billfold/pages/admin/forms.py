"""Reading the console's form fields: amounts typed in major units, whole numbers, choices."""

from __future__ import annotations

import json
from typing import Any

from billfold.kit.errors import InvalidInput
from billfold.kit.money import ZERO_DECIMAL


def minor_units(text: str, currency: str, *, label: str = "The amount") -> int:
    """ "12.50" USD → 1250; "500" JPY → 500. Never through a float."""
    digits = 0 if currency.lower() in ZERO_DECIMAL else 2
    major, _, minor = text.strip().replace(",", "").partition(".")
    if not major.isdigit() or len(minor) > digits or (minor and not minor.isdigit()):
        example = "12.50" if digits else "500"
        raise InvalidInput(f"{label}: give it like {example} ({currency.upper()})")
    scale = 100 if digits else 1
    amount = int(major) * scale + int(minor.ljust(digits, "0") or "0")
    if amount <= 0:
        raise InvalidInput(f"{label} must be more than zero")
    return amount


def whole(text: str, *, label: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInput(f"{label}: give a whole number") from None


def choice(value: str, allowed: Any, *, label: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"Choose a {label}")
    return value


def json_object(text: str, *, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{label}: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InvalidInput(f'{label}: give a JSON object, like {{"limits": {{}}}}')
    return value
