"""The ingest writer: concurrent deliveries funnelled into few transactions on one thread."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from payhook.store.engine import StoreUnavailable
from payhook.store.eventlog import Delivery, EventLog, IngestResult

__all__ = ["BatchWriter"]

log = logging.getLogger("payhook.ingest")

MAX_BATCH = 64
# The longest a commit waits for deliveries expected back (see BatchWriter._gather).
GATHER_LIMIT = 0.002


@dataclass
class _Pending:
    delivery: Delivery
    future: asyncio.Future[IngestResult] = field(repr=False)
    deadline: float | None  # time.monotonic() by which it is answered, stored or not


class BatchWriter:
    """Every delivery gets its own answer, only after the transaction holding it committed;
    a busy receiver just commits more events per transaction.

    Each delivery is answered within `timeout` seconds of its submission (default: the
    store's): when the store does not answer in time, with StoreUnavailable (a 503: Stripe
    retries), even if the writer's thread is still waiting on the database. A delivery
    answered so before its transaction began is never written; one whose transaction was
    under way may still commit, and Stripe's retry is then answered `duplicate`.

    It can be started, stopped and started again. If its task dies, the deliveries waiting
    on it fail at once with StoreUnavailable and it starts afresh.
    """

    def __init__(self, log: EventLog, *, timeout: float | None = None) -> None:
        self.log = log
        self.timeout = log.store.timeout if timeout is None else timeout
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[_Pending] = []
        self._running = False
        # Group commit: how many deliveries the last commit found in flight (its own and
        # those queued while it ran), how long it took, and a future set by submit().
        self._in_flight_peak = 1
        self._commit_seconds = 0.0
        self._more: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self._running:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="payhook-ingest")
        self._running = True
        self._spawn()

    async def stop(self) -> None:
        """Answer what is queued, then stop the task and its thread."""
        if not self._running:
            return
        self._running = False
        assert self._queue is not None and self._executor is not None
        if self._task is not None and not self._task.done():
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._fail_waiting(StoreUnavailable("payhook is shutting down", reason="shutting_down"))
        executor, self._executor = self._executor, None
        executor.shutdown(wait=True)

    async def submit(self, delivery: Delivery) -> IngestResult:
        if not self._running or self._queue is None:
            raise StoreUnavailable("the ingest writer is not running", reason="not_running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        if self.timeout is None:
            self._queue.put_nowait(_Pending(delivery, future, None))
            self._wake_gatherer()
            return await future
        self._queue.put_nowait(_Pending(delivery, future, time.monotonic() + self.timeout))
        self._wake_gatherer()
        # The answer is set on the future, not by cancelling this task: a timeout that
        # cancels may race with the result and leave the request's task cancelled.
        expiry = loop.call_later(self.timeout, self._expire, future)
        try:
            return await future
        finally:
            expiry.cancel()

    def _expire(self, future: asyncio.Future[IngestResult]) -> None:
        if not future.done():
            message = f"the event store did not answer within {self.timeout:g} s"
            future.set_exception(StoreUnavailable(message, reason="timeout"))

    def _spawn(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payhook-ingest-writer")
        self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if not self._running:
            return
        log.error("the ingest writer died (%r); answering waiting deliveries 503 and restarting", error)
        self._fail_waiting(StoreUnavailable(f"the ingest writer failed: {error!r}", reason="writer_failed"))
        self._spawn()

    def _fail_waiting(self, error: StoreUnavailable) -> None:
        """Answer every delivery in flight or queued with `error`."""
        waiting = self._in_flight
        self._in_flight = []
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
                self._queue.task_done()
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            taken = [await queue.get()]
            self._in_flight = taken  # answered by stop() or _supervise if this task ends
            await self._gather(taken, queue, loop)
            # Those already answered (their time ran out while the writer was busy) are
            # not written: Stripe was told to retry them.
            batch = [pending for pending in taken if not pending.future.done()]
            self._in_flight = batch
            try:
                if not batch:
                    continue
                started = loop.time()
                outcomes = await loop.run_in_executor(self._executor, self._write, batch)
                self._commit_seconds = loop.time() - started
                self._in_flight_peak = min(MAX_BATCH, len(taken) + queue.qsize())
                for pending, outcome in zip(batch, outcomes, strict=True):
                    if pending.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
            finally:
                # Whatever is still unanswered here is answered by _supervise (a crash) or
                # stop() (a cancellation).
                if all(pending.future.done() for pending in batch):
                    self._in_flight = []
                for _ in taken:
                    queue.task_done()

    async def _gather(
        self, taken: list[_Pending], queue: asyncio.Queue[_Pending], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Take what is queued; under steady load, wait briefly for the rest of the load.

        Under a closed loop of N deliveries in flight, the deliveries answered by one commit
        come back while the next commit is already under way, so commits would alternate
        between k and N - k deliveries: an fsync for every N/2. Waiting for as many as the
        last commit found in flight, for no longer than that commit took (and at most
        GATHER_LIMIT), makes it one fsync for N; when commits are cheap, nobody waits.
        """
        until = loop.time() + min(self._commit_seconds, GATHER_LIMIT)
        while len(taken) < MAX_BATCH:
            if not queue.empty():
                taken.append(queue.get_nowait())
                continue
            remaining = until - loop.time()
            if len(taken) >= self._in_flight_peak or remaining <= 0:
                return
            more = self._more = loop.create_future()
            timer = loop.call_later(remaining, _settle, more)
            try:
                await more
            finally:
                timer.cancel()
                self._more = None

    def _wake_gatherer(self) -> None:
        if self._more is not None:
            _settle(self._more)

    def _write(self, batch: list[_Pending]) -> list[IngestResult | BaseException]:
        deliveries = [pending.delivery for pending in batch]
        # The transaction must be over when the first of its deliveries is due an answer.
        deadlines = [pending.deadline for pending in batch if pending.deadline is not None]
        deadline = min(deadlines, default=None)
        try:
            return list(self.log.append(deliveries, deadline=deadline))
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
                outcomes.append(self.log.append([delivery], deadline=deadline)[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
