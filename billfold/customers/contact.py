"""A customer's phone and free-form metadata: the rules they follow before we keep them.

Both are mirrored to the Stripe customer, so the bounds are Stripe's (a phone of at most 20
characters; metadata keys of at most 40 characters, values of at most 500, 50 keys in all),
and the keys Billfold itself writes on the Stripe customer are reserved: a user's metadata
can neither overwrite nor remove them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from billfold.kit.errors import InvalidInput

# What Billfold writes in the Stripe customer's metadata (billfold/stripe_gateway/customers.py).
RESERVED_KEYS = frozenset({"customer_id", "user_id", "source", "archived"})
# Stripe allows 50 keys on an object; ours take their share of them.
MAX_KEYS = 50 - len(RESERVED_KEYS)
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
MAX_PHONE_LENGTH = 20
_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]*")


class ReservedMetadataKey(InvalidInput):
    code = "reserved_metadata_key"


class InvalidMetadata(InvalidInput):
    code = "invalid_metadata"


class InvalidPhone(InvalidInput):
    code = "invalid_phone"


def check_phone(phone: str) -> str:
    """The phone as we keep it (stripped); InvalidPhone when it is not one."""
    value = phone.strip()
    if len(value) > MAX_PHONE_LENGTH:
        raise InvalidPhone(
            f"A phone number has at most {MAX_PHONE_LENGTH} characters", field="phone"
        )
    if not _PHONE.fullmatch(value) or sum(c.isdigit() for c in value) < 3:
        raise InvalidPhone(
            "A phone number holds digits, spaces and + ( ) . - only, e.g. +1 415 555 0100",
            field="phone",
        )
    return value


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The metadata as we keep it; ReservedMetadataKey or InvalidMetadata when it breaks a rule."""
    reserved = sorted(k for k in metadata if k.strip().lower() in RESERVED_KEYS)
    if reserved:
        raise ReservedMetadataKey(
            f"Metadata keys {', '.join(reserved)} are reserved for Billfold's own use",
            keys=reserved,
            reserved=sorted(RESERVED_KEYS),
            field="metadata",
        )
    if len(metadata) > MAX_KEYS:
        raise InvalidMetadata(
            f"Metadata holds at most {MAX_KEYS} keys, not {len(metadata)}", field="metadata"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidMetadata("Metadata keys and values are strings", field="metadata")
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidMetadata(
                f"A metadata key has 1 to {MAX_KEY_LENGTH} characters", field="metadata"
            )
        if "[" in key or "]" in key or "\x00" in key:
            raise InvalidMetadata(
                "A metadata key may not contain [, ] or NUL characters", field="metadata"
            )
        if not value or len(value) > MAX_VALUE_LENGTH:
            raise InvalidMetadata(
                f"The value of {key[:MAX_KEY_LENGTH]!r} must have 1 to {MAX_VALUE_LENGTH} "
                "characters (leave a key out to remove it)",
                field="metadata",
            )
        if "\x00" in value:
            raise InvalidMetadata(
                "A metadata value may not contain NUL characters", field="metadata"
            )
    return dict(metadata)


def stripe_metadata_update(metadata: Mapping[str, str], sent_keys: list[str]) -> dict[str, str]:
    """The metadata parameter that makes the Stripe customer's user keys equal `metadata`:
    every key of ours, and an empty value (Stripe's removal) for each key sent before and
    gone since. Reserved keys never appear, so our own stay as they are."""
    update = {k: v for k, v in metadata.items() if k not in RESERVED_KEYS}
    for key in sent_keys:
        if key not in update and key not in RESERVED_KEYS:
            update[key] = ""
    return update
