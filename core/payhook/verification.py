"""Verify Stripe's `Stripe-Signature` header against a tenant's secrets."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

__all__ = ["SignatureError", "verify_signature"]

DEFAULT_TOLERANCE = 300


class SignatureError(Exception):
    """The delivery is not signed by any of the tenant's secrets."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Return the index of the secret that signed `payload`.

    Raises `SignatureError` when the header is missing or malformed, when its timestamp
    is more than `tolerance` seconds in the past *or* the future, or when no `v1`
    signature matches any secret.
    """
    # The raw bytes are what Stripe signed: parsing (and re-serialising) JSON first would
    # change them, and would also spend work on bodies an attacker made up.
    if not header:
        raise SignatureError("missing_signature", "Stripe-Signature header is missing")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(
                    "malformed_signature", "Stripe-Signature timestamp is not an integer"
                ) from None
        elif key == "v1":
            candidates.append(value.encode("ascii", "replace"))
    if timestamp is None or not candidates:
        raise SignatureError(
            "malformed_signature", "Stripe-Signature needs t=<timestamp> and at least one v1=<hex>"
        )
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance:
        raise SignatureError("stale_timestamp", f"signature timestamp is older than {tolerance}s")
    if age < -tolerance:
        # The stripe SDK only checks the past; a far-future timestamp would let a captured
        # request be replayed for as long as its clock skew lasts.
        raise SignatureError("future_timestamp", f"signature timestamp is more than {tolerance}s ahead")
    signed = b"%d." % timestamp + payload
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest().encode()
        # Check every candidate without stopping early, so timing does not reveal which matched.
        if any([hmac.compare_digest(expected, candidate) for candidate in candidates]):
            return index
    raise SignatureError("invalid_signature", "no v1 signature matches the endpoint's secrets")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Build a `Stripe-Signature` header value, as Stripe does (for tests and tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode("utf-8"), b"%d." % t + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
