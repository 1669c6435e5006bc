"""The types of the `stripe_event` and `stripe_api` fixtures, to annotate tests with.

`MakePayhook` (of ``make_payhook``) lives with the harness it makes. Neither type needs pytest
or respx at run time: a test module annotates with them before either is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    import respx

__all__ = ["StripeAPIRouter", "StripeEventFactory"]


class StripeEventFactory(Protocol):
    """The ``stripe_event`` fixture (`payhook.testing.load_event`):
    ``stripe_event("charge.refunded.full", data__object__metadata={"order_id": "7"})``."""

    def __call__(self, name: str | Path | Mapping[str, Any], /, **changes: Any) -> dict[str, Any]: ...


# The ``stripe_api`` fixture: a respx router for https://api.stripe.com
# (``stripe_api.get("/v1/payment_intents/pi_1").mock(return_value=httpx.Response(200, json=...))``).
StripeAPIRouter: TypeAlias = "respx.MockRouter"
