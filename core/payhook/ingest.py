"""The request path: `POST /{tenant}` -> verify -> parse -> store -> answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .envelope import BadEvent, parse_event, to_delivery
from .observe import observe_delivery
from .store import StoreUnavailable
from .verification import SignatureError, verify_signature

if TYPE_CHECKING:
    from .runtime import Payhook

__all__ = ["error", "healthz", "receive"]

log = logging.getLogger("payhook.ingest")


# For answers sent before the body was read to its end: what is left of it on the
# connection cannot be told apart from a next request, so the connection must go.
CLOSE = {"Connection": "close"}
SHOWN_NAME_LENGTH = 64


def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def shown(name: str) -> str:
    """`name` for an error message, cut short: a path segment can be any length."""
    if len(name) <= SHOWN_NAME_LENGTH:
        return name
    return name[:SHOWN_NAME_LENGTH] + "…"


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class BadContentLength(ClientDisconnect):
    """`Content-Length` is not a number: the request's framing cannot be trusted.

    A ClientDisconnect, so that `receive` answers it 400 as it does a body cut short.
    """


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body; BodyTooLarge past `limit` bytes, BodyTimeout after `timeout` seconds,
    BadContentLength when the declared length is not a number.

    The deadline covers the whole body rather than each read, so a sender that trickles
    a byte at a time cannot hold the request (and its connection) open for longer.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        digits = declared.strip(" \t")
        # isdigit() alone takes "²" and other digits int() refuses: ASCII only.
        if not (digits.isascii() and digits.isdigit()):
            raise BadContentLength
        # More digits than the limit has is too large: int() is never given thousands of
        # digits (it refuses more than 4300, leading zeros included).
        significant = digits.lstrip("0") or "0"
        if len(significant) > len(str(limit)) or int(significant) > limit:
            raise BodyTooLarge
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout from None
    return b"".join(chunks)


@observe_delivery
async def receive(request: Request) -> Response:
    payhook: Payhook = request.app.state.payhook
    await payhook.ensure_started()
    slug = request.path_params["tenant"]
    tenant = payhook.config.tenants.get(slug)
    if tenant is None:
        return error(404, "unknown_tenant", f"no tenant {shown(slug)!r} is configured")
    if not tenant.active:
        return error(404, "unknown_tenant", f"tenant {slug!r} is not active")
    ingest = payhook.config.ingest
    try:
        body = await read_body(request, ingest.max_body_bytes, ingest.body_timeout)
    except BodyTooLarge:
        return error(413, "body_too_large", f"the body exceeds {ingest.max_body_bytes} bytes", CLOSE)
    except BodyTimeout:
        detail = f"the body did not arrive within {ingest.body_timeout:g} seconds"
        return error(408, "body_timeout", detail, CLOSE)
    except ClientDisconnect:
        return Response(status_code=400)
    try:
        secret_index = verify_signature(
            body,
            request.headers.get("stripe-signature"),
            tenant.webhook_secrets,
            tolerance=ingest.signature_tolerance,
        )
    except SignatureError as exc:
        return error(400, exc.code, exc.detail)
    try:
        event, payload = parse_event(body)
    except BadEvent as exc:
        return error(400, exc.code, exc.detail)
    handlers = payhook.plugins.handlers_for(event["type"], tenant)
    delivery = to_delivery(slug, event, payload, secret_index, handlers)
    request.state.payhook_delivery = delivery  # for its log line (observe.DELIVERY_STATE)
    try:
        result = await payhook.store_delivery(delivery)
    except StoreUnavailable as exc:
        log.error("could not store event %s for %s: %s", delivery.stripe_event_id, slug, exc)
        return error(503, "store_unavailable", "the event store is unavailable; retry later")
    if result.status == "accepted":
        payhook.event_stored(result, delivery, event, tenant)
    if payhook.config.mode_for(tenant) == "inline" and result.status != "ignored":
        failed = await payhook.process_inline(result.event_id)
        if failed:
            return error(
                500,
                "handler_failed",
                f"{len(failed)} handler(s) failed for event {delivery.stripe_event_id}; "
                "it is stored and will be retried",
            )
    body_out: dict[str, Any] = {"status": result.status, "event": delivery.stripe_event_id}
    if result.rearmed:
        body_out["rearmed"] = result.rearmed
    return JSONResponse(body_out)


async def healthz(request: Request) -> Response:
    payhook: Payhook = request.app.state.payhook
    try:
        await asyncio.get_running_loop().run_in_executor(None, payhook.store.ping)
    except StoreUnavailable as exc:
        return error(503, "store_unavailable", exc.reason)
    return JSONResponse({"status": "ok"})
