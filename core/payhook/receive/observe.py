"""Every delivery answered is observed: counted in the Prometheus instruments and logged.

`observe_delivery` wraps the one function that produces the answer (`ingest.receive`) and
writes one line with the tenant, the event, the outcome and the duration.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from payhook import metrics
from payhook.logs import Fields

__all__ = ["DELIVERY_STATE", "observe_delivery"]

delivery_log = logging.getLogger("payhook.delivery")

# The request state key under which `receive` leaves the parsed delivery for the log line.
DELIVERY_STATE = "payhook_delivery"
# The answer to a client that went away mid-body has no body to read an outcome from.
DISCONNECTED = "client_disconnected"
INTERNAL_ERROR = "internal_error"
# A request path can be any length; the log shows this much of an unknown tenant's name.
SHOWN_SLUG = 64

Endpoint = Callable[[Request], Awaitable[Response]]


def observe_delivery(endpoint: Endpoint) -> Endpoint:
    """Count and log every answer `endpoint` gives, an exception included."""

    @functools.wraps(endpoint)
    async def observed(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except Exception:
            _delivered(request, None, time.perf_counter() - started)
            raise
        _delivered(request, response, time.perf_counter() - started)
        return response

    return observed


def _delivered(request: Request, response: Response | None, seconds: float) -> None:
    slug: str = request.path_params.get("tenant", "")
    known = slug in request.app.state.payhook.config.tenants
    answer = _answer(response)
    if response is None:
        outcome = INTERNAL_ERROR
    else:
        outcome = answer.get("status") or answer.get("error") or DISCONNECTED
    metrics.delivery_answered(slug if known else "", outcome, seconds)
    if not delivery_log.isEnabledFor(logging.INFO):
        return
    # Set by `receive` once the event is parsed (see DELIVERY_STATE).
    delivery = request.scope.get("state", {}).get(DELIVERY_STATE)
    facts = {
        "tenant": slug if known else slug[:SHOWN_SLUG],
        "known_tenant": known,
        "event_id": answer.get("event") or (delivery.stripe_event_id if delivery else None),
        "event_type": delivery.type if delivery else None,
        "outcome": outcome,
        "status": response.status_code if response is not None else 500,
        "duration_ms": round(seconds * 1000, 3),
    }
    delivery_log.info(Fields("delivery", facts))


def _answer(response: Response | None) -> dict[str, Any]:
    """The JSON object payhook answered with ({} for an empty body)."""
    body = getattr(response, "body", b"")
    if not body:
        return {}
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
