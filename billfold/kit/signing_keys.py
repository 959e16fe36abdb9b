"""The Ed25519 keys that sign licenses: the current one, and older public keys that still
verify licenses issued before a rotation, published as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: the same key always has the same ID, on every server."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw(public))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:16]


def jwk(public: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(_raw(public)),
        "kid": key_id(public),
        "alg": "EdDSA",
        "use": "sig",
    }


def load_private_key(text: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) key, or the base64 of the raw 32-byte seed (one line, for .env)."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text + "=" * (-len(text) % 4)))
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("LICENSE_PRIVATE_KEY must be an Ed25519 key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """A PEM public key, or the base64 of the raw 32-byte public key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text + "=" * (-len(text) % 4)))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def new_private_key_text() -> str:
    """A fresh key in the one-line form LICENSE_PRIVATE_KEY accepts."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed).decode()


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class SigningKeys:
    private: Ed25519PrivateKey
    previous: tuple[Ed25519PublicKey, ...] = ()

    @classmethod
    def load(cls, private_key: str, previous_public_keys: str = "") -> SigningKeys:
        """From the settings' text forms (LICENSE_PRIVATE_KEY, LICENSE_PREVIOUS_PUBLIC_KEYS)."""
        return cls(load_private_key(private_key), tuple(_public_keys(previous_public_keys)))

    @cached_property
    def kid(self) -> str:
        return key_id(self.private.public_key())

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every key a license may have been signed with, by key ID (current first)."""
        keys = {self.kid: self.private.public_key()}
        for public in self.previous:
            keys.setdefault(key_id(public), public)
        return keys

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [jwk(k) for k in self.public_keys().values()]}


def _public_keys(text: str) -> list[Ed25519PublicKey]:
    """PEM blocks, or base64 raw keys separated by commas or whitespace."""
    if "-----BEGIN" in text:
        end = "-----END PUBLIC KEY-----"
        return [load_public_key(block + end) for block in text.split(end) if "-----BEGIN" in block]
    return [load_public_key(part) for part in text.replace(",", " ").split()]
