"""Every delivery answered is observed: counted in the Prometheus instruments and logged.

`observe_delivery` wraps the one function that produces the answer (`ingest.receive`) and
writes one line with the tenant, the event, the outcome and the duration.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from payhook import metrics
from payhook.logs import Fields

__all__ = ["DELIVERY_STATE", "Answer", "observe_delivery"]

delivery_log = logging.getLogger("payhook.delivery")

# The request state key under which `receive` leaves the parsed delivery for the log line.
DELIVERY_STATE = "payhook_delivery"
# The answer to a client that went away mid-body has no body to read an outcome from.
DISCONNECTED = "client_disconnected"
INTERNAL_ERROR = "internal_error"
# A request path can be any length; the log shows this much of an unknown tenant's name.
SHOWN_SLUG = 64

# The bytes Starlette's JSONResponse renders, from one encoder made once.
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class Answer(JSONResponse):
    """A JSON answer, byte for byte JSONResponse's, that keeps its object (`content`) for
    the delivery's log line and metrics instead of having them read the body back."""

    def __init__(
        self, content: dict[str, Any], status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        self.content = content
        self.status_code = status_code
        self.background = None
        self.body = _encode_json(content).encode("utf-8")
        if headers is None:
            self.raw_headers = [(b"content-length", b"%d" % len(self.body)), _JSON_CONTENT_TYPE]
        else:
            self.init_headers(headers)


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
    if isinstance(response, Answer):
        return response.content
    body = getattr(response, "body", b"")
    if not body:
        return {}
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
