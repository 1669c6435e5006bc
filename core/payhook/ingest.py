"""The request path: `POST /{tenant}` -> verify -> parse -> store -> answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .envelope import BadEvent, parse_event, to_delivery
from .eventlog import Delivery, EventLog, IngestResult
from .store import StoreUnavailable
from .verification import SignatureError, verify_signature

if TYPE_CHECKING:
    from .app import Payhook

__all__ = ["BatchWriter", "error", "receive"]

log = logging.getLogger("payhook.ingest")

MAX_BATCH = 64


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


class BatchWriter:
    """Funnels concurrent deliveries into few transactions on one writer thread.

    Every delivery still gets its own answer, and only after the transaction that holds
    it committed; a busy receiver just commits more events per transaction.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._queue: asyncio.Queue[tuple[Delivery, asyncio.Future[IngestResult]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="payhook-ingest")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="payhook-ingest-writer")

    async def stop(self) -> None:
        if self._task is not None:
            assert self._queue is not None
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, delivery: Delivery) -> IngestResult:
        assert self._queue is not None, "BatchWriter.start() was not called"
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((delivery, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await loop.run_in_executor(self._executor, self._write, batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(
        self, batch: list[tuple[Delivery, asyncio.Future[IngestResult]]]
    ) -> list[IngestResult | BaseException]:
        deliveries = [delivery for delivery, _ in batch]
        try:
            return list(self.log.append(deliveries))
        except StoreUnavailable as exc:
            # The store is down for everyone: answer the whole batch now (503), rather than
            # waiting out a connection timeout once per delivery.
            return [exc] * len(deliveries)
        except Exception as exc:
            if len(deliveries) == 1:
                return [exc]
        # One bad delivery must not fail its neighbours: store them one by one.
        outcomes: list[IngestResult | BaseException] = []
        for delivery in deliveries:
            try:
                outcomes.append(self.log.append([delivery])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body; BodyTooLarge past `limit` bytes, BodyTimeout after `timeout` seconds.

    The deadline covers the whole body rather than each read, so a sender that trickles
    a byte at a time cannot hold the request (and its connection) open for longer.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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
    handlers = payhook.plugins.handlers_for(event["type"], tenant.plugins)
    delivery = to_delivery(slug, event, payload, secret_index, handlers)
    try:
        result = await payhook.writer.submit(delivery)
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
        return error(503, "store_unavailable", str(exc).split(":")[0])
    return JSONResponse({"status": "ok"})
