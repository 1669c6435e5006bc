"""Verify Stripe's `Stripe-Signature` header against a tenant's secrets.

The header is read by the rules of Stripe's own Python library (`stripe.WebhookSignature`),
so that payhook accepts and refuses the same headers; docs/http.md lists those rules and the
few deliberate differences (the future bound on the timestamp above all).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

__all__ = ["SignatureError", "sign", "verify_signature"]

DEFAULT_TOLERANCE = 300
SCHEME = "v1"


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

    Raises `SignatureError` (and nothing else, whatever the header holds) when the header
    is missing or malformed, when its timestamp is more than `tolerance` seconds in the
    past *or* the future, or when no `v1` signature matches any secret.
    """
    # The raw bytes are what Stripe signed: parsing (and re-serialising) JSON first would
    # change them, and would also spend work on bodies an attacker made up.
    if not header:
        raise SignatureError("missing_signature", "Stripe-Signature header is missing")
    timestamp, candidates = _parse_header(header)
    current = time.time() if now is None else now
    # Compare the integer with the float directly: Python does that exactly for any size,
    # where subtracting a 400-digit timestamp from a float would overflow.
    if timestamp < current - tolerance:
        raise SignatureError("stale_timestamp", f"signature timestamp is older than {tolerance}s")
    if timestamp > current + tolerance:
        # Stripe's library only checks the past; a far-future timestamp would let a captured
        # request be replayed for as long as its clock skew lasts.
        raise SignatureError("future_timestamp", f"signature timestamp is more than {tolerance}s ahead")
    signed = b"%d." % timestamp + payload
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest().encode()
        # Check every candidate without stopping early, so timing does not reveal which matched.
        if any([hmac.compare_digest(expected, candidate) for candidate in candidates]):
            return index
    raise SignatureError("invalid_signature", "no v1 signature matches the endpoint's secrets")


def _parse_header(header: str) -> tuple[int, list[bytes]]:
    """The header's timestamp and its `v1` values, read as Stripe's library reads them.

    Items are split on every ',' and keys compared exactly as sent (no trimming); an item
    keeps the text between its first and second '='; the first `t` counts, every `v1` does.
    """
    timestamp_text: str | None = None
    values: list[str] = []
    for item in header.split(","):
        key, *rest = item.split("=", 2)
        if key != "t" and key != SCHEME:
            continue  # v0, unknown schemes and stray text are ignored
        if not rest:
            raise SignatureError("malformed_signature", f"Stripe-Signature has {key!r} without a value")
        if key == SCHEME:
            values.append(rest[0])
        elif timestamp_text is None:
            timestamp_text = rest[0]
    if timestamp_text is None:
        raise SignatureError("malformed_signature", "Stripe-Signature has no t=<timestamp>")
    try:
        # int() is what Stripe's library uses: it allows surrounding whitespace, a sign and
        # '_' between digits, and refuses more digits than Python's conversion limit.
        timestamp = int(timestamp_text)
    except ValueError:
        raise SignatureError("malformed_signature", "Stripe-Signature timestamp is not an integer") from None
    if not values:
        raise SignatureError("malformed_signature", "Stripe-Signature has no v1=<signature>")
    # A non-ASCII value can never equal a hex digest; 'replace' keeps it a non-match
    # (Stripe's library raises TypeError on one) without spoiling the values after it.
    return timestamp, [value.encode("ascii", "replace") for value in values]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Build a `Stripe-Signature` header value, as Stripe does (for tests and tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode("utf-8"), b"%d." % t + payload, hashlib.sha256).hexdigest()
    return f"t={t},{SCHEME}={digest}"
