"""The HTTP client under every tenant's Stripe client: the SDK's httpx one, with a deadline.

httpx's timeouts bound each connect, read and write, never a whole request: an answer
trickled a byte at a time never trips them, so a call lasts as long as the server likes.
A sync httpx read cannot be interrupted from outside; a request on httpx's async side can
be cancelled at any await. So the SDK's synchronous calls (the ones `ctx.stripe`,
`ctx.fetch_latest()` and `payhook reconcile` make) run the SDK's own async request on an
event loop thread this client owns, under `asyncio.timeout`, and wait for its answer. Every
request runs on that one loop, so connections are kept between calls as before.

This module imports the SDK: it is imported only when a Stripe client is built.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import stripe

__all__ = ["DeadlineHTTPXClient", "StripeTimeout"]

# The body, status and headers of an answer.
Answer = tuple[bytes, int, Mapping[str, str]]


class StripeTimeout(stripe.APIConnectionError):
    """A request to Stripe got no complete answer within `[stripe] timeout` seconds.

    An `APIConnectionError` (the SDK retries it as one); its own class gives a handler's
    failure a stable recorded type, `payhook.StripeTimeout`.
    """


class DeadlineHTTPXClient(stripe.HTTPXClient):
    """`stripe.HTTPXClient` whose requests each end within `timeout` seconds in total.

    A request over the deadline raises `StripeTimeout`, an `APIConnectionError` (retryable,
    like httpx's own timeouts), so the SDK tries it again up to `max_network_retries` times,
    each try with its own deadline. Streamed answers (`request_stream`, used for file downloads) keep the
    SDK's per-read timeouts only.
    """

    def __init__(self, timeout: float) -> None:
        # The same number bounds each read (httpx) and each whole request (here).
        super().__init__(timeout=timeout, allow_sync_methods=True)
        self.deadline = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # HTTPXClient's own signature; the base class annotates another (a str body, `_usage`).
    def request(  # type: ignore[override]
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Answer:
        return self._submit(method, url, headers, post_data).result()

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Answer:
        # On the client's own loop too: httpx's pooled connections belong to one loop.
        return await asyncio.wrap_future(self._submit(method, url, headers, post_data))

    def close(self) -> None:
        super().close()  # type: ignore[no-untyped-call]
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(super().close_async(), loop).result()  # type: ignore[no-untyped-call]
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def close_async(self) -> None:
        await asyncio.to_thread(self.close)

    def _submit(self, method: str, url: str, headers: Mapping[str, str], post_data: Any) -> Future[Answer]:
        return asyncio.run_coroutine_threadsafe(
            self._within_deadline(method, url, headers, post_data), self._running_loop()
        )

    async def _within_deadline(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> Answer:
        try:
            async with asyncio.timeout(self.deadline):
                answer: Answer = await super().request_async(method, url, headers, post_data)
                return answer
        except TimeoutError:
            raise StripeTimeout(  # type: ignore[no-untyped-call]
                f"no complete answer within {self.deadline:g} s ([stripe] timeout bounds each "
                "request in total)",
                should_retry=True,
            ) from None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="payhook-stripe-http", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop
