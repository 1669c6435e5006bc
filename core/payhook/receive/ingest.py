"""The request path: `POST /{tenant}` -> verify -> parse -> store -> answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from payhook.receive.envelope import (
    BadEvent,
    WrongRoute,
    parse_event,
    parse_thin_event,
    to_delivery,
    to_thin_delivery,
)
from payhook.receive.guards import check as check_guards
from payhook.receive.observe import Answer, observe_delivery
from payhook.receive.verification import SignatureError, verify_signature
from payhook.store.engine import StoreUnavailable
from payhook.store.migrations import SchemaNotMigrated

if TYPE_CHECKING:
    from payhook.receive.runtime import Payhook

__all__ = ["error", "healthz", "receive", "receive_thin"]

log = logging.getLogger("payhook.ingest")


# For answers sent before the body was read to its end: what is left of it on the
# connection cannot be told apart from a next request, so the connection must go.
CLOSE = {"Connection": "close"}
SHOWN_NAME_LENGTH = 64


def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer({"error": code, "detail": detail}, status_code=status, headers=headers)


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
    """`POST /{tenant}`: a snapshot event, signed with one of `webhook_secrets`."""
    return await _receive(request, thin=False)


@observe_delivery
async def receive_thin(request: Request) -> Response:
    """`POST /{tenant}/thin`: a thin event notification, signed with `thin_webhook_secrets`."""
    return await _receive(request, thin=True)


def _route(slug: str, thin: bool) -> str:
    return f"/{slug}/thin" if thin else f"/{slug}"


async def _receive(request: Request, *, thin: bool) -> Response:
    payhook: Payhook = request.app.state.payhook
    try:
        await payhook.ensure_started()
    except SchemaNotMigrated as exc:
        # A mounted app without a lifespan starts here: Stripe retries a 503 once upgraded.
        log.error("%s", exc)
        return error(503, "schema_not_migrated", str(exc))
    slug = request.path_params["tenant"]
    tenant = payhook.config.tenants.get(slug)
    if tenant is None:
        return error(404, "unknown_tenant", f"no tenant {shown(slug)!r} is configured")
    if not tenant.active:
        return error(404, "unknown_tenant", f"tenant {slug!r} is not active")
    secrets, other_secrets = tenant.webhook_secrets, tenant.thin_webhook_secrets
    if thin:
        secrets, other_secrets = other_secrets, secrets
        if not secrets:
            return error(404, "thin_not_enabled", f"tenant {slug!r} takes no thin events")
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
    signature = request.headers.get("stripe-signature")
    try:
        secret_index = verify_signature(body, signature, secrets, tolerance=ingest.signature_tolerance)
    except SignatureError as exc:
        if _signed_by(body, signature, other_secrets, ingest.signature_tolerance):
            # Signed for the tenant's other destination: say where it belongs.
            detail = f"{exc.detail}; it is signed for {_route(slug, not thin)}, POST it there"
            return error(400, "wrong_route", detail)
        return error(400, exc.code, exc.detail)
    try:
        event, payload = parse_thin_event(body) if thin else parse_event(body)
    except WrongRoute as exc:
        return error(400, exc.code, f"{exc.detail}; POST it to {_route(slug, exc.thin)}")
    except BadEvent as exc:
        return error(400, exc.code, exc.detail)
    handlers = payhook.plugins.handlers_for(event["type"], tenant)
    to_row = to_thin_delivery if thin else to_delivery
    delivery = check_guards(tenant, to_row(slug, event, payload, secret_index, handlers))
    if payhook.config.mode_for(tenant) == "inline":
        # Its runs are this request's from creation: no worker can take them (processing.md).
        delivery = payhook.with_inline_lease(delivery)
    request.state.payhook_delivery = delivery  # for its log line (observe.DELIVERY_STATE)
    try:
        result = await payhook.store_delivery(delivery)
    except StoreUnavailable as exc:
        log.error("could not store event %s for %s: %s", delivery.stripe_event_id, slug, exc)
        return error(503, "store_unavailable", "the event store is unavailable; retry later")
    if result.status == "accepted":
        payhook.event_stored(result, delivery, tenant)
    if delivery.lease is not None and result.status != "ignored":
        try:
            failed = await payhook.process_inline(result.event_id, delivery.lease)
        except StoreUnavailable as exc:
            # Stored, its runs under this request's lease: when it runs out, the worker's.
            log.error("could not run event %s for %s inline: %s", delivery.stripe_event_id, slug, exc)
            return error(503, "store_unavailable", "the event store is unavailable; retry later")
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
    if delivery.ignored_reason is not None and result.status == "ignored":
        body_out["reason"] = delivery.ignored_reason
    return Answer(body_out)


def _signed_by(body: bytes, signature: str | None, secrets: tuple[str, ...], tolerance: int) -> bool:
    if not secrets:
        return False
    try:
        verify_signature(body, signature, secrets, tolerance=tolerance)
    except SignatureError:
        return False
    return True


async def healthz(request: Request) -> Response:
    payhook: Payhook = request.app.state.payhook
    try:
        await asyncio.get_running_loop().run_in_executor(None, payhook.store.ping)
    except StoreUnavailable as exc:
        answer = {"error": "store_unavailable", "detail": exc.reason}
        if str(exc) != exc.reason:
            # What the store said (the driver's message: say, a pooler refusing the
            # connection), already free of the URL's password.
            answer["cause"] = str(exc)
        return JSONResponse(answer, status_code=503)
    problem = await asyncio.get_running_loop().run_in_executor(None, payhook.schema_problem)
    if problem is not None:
        return error(503, "schema_not_migrated", problem)
    return JSONResponse({"status": "ok"})
