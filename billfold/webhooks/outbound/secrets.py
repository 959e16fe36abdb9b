"""Endpoint signing secrets: made here, shown once, kept encrypted at rest.

A signing secret must be readable to sign with, so it cannot be hashed like a password. It is
stored encrypted with AES-256-GCM under a key that is not in the database:
`WEBHOOK_SECRETS_KEY` (base64 of 32 bytes), or, when that is unset, a key derived from
`JWT_SECRET` with HKDF. A copy of the database alone does not reveal any secret. The
endpoint's ID is bound in as associated data, so a ciphertext moved to another row fails.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from billfold.config import Settings, secret

_VERSION = "v1"


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with the configured key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the webhook secrets key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.webhook_secrets_key is not None:
            try:
                key = base64.b64decode(secret(settings.webhook_secrets_key), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("WEBHOOK_SECRETS_KEY must be base64 of 32 bytes") from exc
            return cls(key)
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"billfold webhook secrets"
        ).derive(secret(settings.jwt_secret).encode())
        return cls(derived)

    def seal(self, plaintext: str, endpoint_id: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), endpoint_id.encode())
        return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, endpoint_id: str) -> str:
        version, _, body = stored.partition(":")
        if version != _VERSION:
            raise ValueError(f"unknown secret encoding {version!r}")
        raw = base64.b64decode(body)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()
        except InvalidTag as exc:
            raise ValueError("the webhook secret does not decrypt with this key") from exc
