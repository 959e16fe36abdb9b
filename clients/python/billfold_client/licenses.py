"""Verify license tokens offline with Billfold's JWKS, fetched once and cached."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import jwt

ISSUER = "billfold"


class InvalidLicense(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LicenseVerifier:
    """`LicenseVerifier("https://billing.example").verify(token)` answers the claims.

    The JWKS (`/.well-known/jwks.json`) is fetched on first use and kept for `cache_seconds`;
    a token signed by a key not in the cache (a rotation) fetches it again, at most once a
    `min_refresh_seconds`, so a flood of bad tokens cannot hammer Billfold.
    """

    def __init__(
        self,
        base_url: str,
        *,
        cache_seconds: float = 3600.0,
        min_refresh_seconds: float = 30.0,
        http_client: httpx.Client | None = None,
        jwks: dict[str, Any] | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/.well-known/jwks.json"
        self._http = http_client or httpx.Client(timeout=10.0)
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0  # how many times the JWKS was fetched
        if jwks is not None:
            self._load(jwks)
            self._fetched_at = time.monotonic()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if Billfold signed it and it has not expired."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidLicense("license_malformed", "not a license token") from exc
        key = self._key(str(kid))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidLicense("license_expired", "the license has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidLicense("license_invalid", "the license does not verify") from exc
        return claims

    def _key(self, kid: str) -> Any:
        now = time.monotonic()
        with self._lock:
            stale = now - self._fetched_at > self._cache_seconds
            unknown = kid not in self._keys and now - self._fetched_at > self._min_refresh
            if stale or unknown:
                response = self._http.get(self._url)
                response.raise_for_status()
                self._load(response.json())
                self._fetched_at = now
                self.fetches += 1
            if kid not in self._keys:
                raise InvalidLicense("license_unknown_key", "no Billfold key has this kid")
            return self._keys[kid]

    def _load(self, jwks: dict[str, Any]) -> None:
        self._keys = {
            str(k["kid"]): jwt.PyJWK.from_dict(k).key for k in jwks.get("keys", []) if "kid" in k
        }
