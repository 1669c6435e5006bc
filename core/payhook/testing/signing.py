"""Request bodies and headers signed the way Stripe signs its deliveries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from payhook.receive.verification import sign

__all__ = ["TEST_SECRET", "encode", "signed_headers"]

# Every harness tenant's `webhook_secrets` unless the test gives its own.
TEST_SECRET = "whsec_payhook_test_secret"


def signed_headers(body: bytes, secret: str = TEST_SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def encode(event: Mapping[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()
