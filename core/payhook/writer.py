"""The ingest writer: concurrent deliveries funnelled into few transactions on one thread."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from .eventlog import Delivery, EventLog, IngestResult
from .store import StoreUnavailable

__all__ = ["BatchWriter"]

log = logging.getLogger("payhook.ingest")

MAX_BATCH = 64

_Pending = tuple[Delivery, "asyncio.Future[IngestResult]"]


class BatchWriter:
    """Every delivery gets its own answer, only after the transaction holding it committed;
    a busy receiver just commits more events per transaction.

    It can be started, stopped and started again. If its task dies, the deliveries waiting
    on it fail at once with StoreUnavailable (a 503: Stripe retries) and it starts afresh.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[_Pending] = []
        self._running = False

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
        self._fail_waiting(StoreUnavailable("payhook is shutting down"))
        executor, self._executor = self._executor, None
        executor.shutdown(wait=True)

    async def submit(self, delivery: Delivery) -> IngestResult:
        if not self._running or self._queue is None:
            raise StoreUnavailable("the ingest writer is not running")
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((delivery, future))
        return await future

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
        self._fail_waiting(StoreUnavailable(f"the ingest writer failed: {error!r}"))
        self._spawn()

    def _fail_waiting(self, error: StoreUnavailable) -> None:
        """Answer every delivery in flight or queued with `error`."""
        waiting = self._in_flight
        self._in_flight = []
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
                self._queue.task_done()
        for _, future in waiting:
            if not future.done():
                future.set_exception(error)

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            self._in_flight = batch
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
                # Whatever is still unanswered here is answered by _supervise (a crash) or
                # stop() (a cancellation).
                if all(future.done() for _, future in batch):
                    self._in_flight = []
                for _ in batch:
                    queue.task_done()

    def _write(self, batch: list[_Pending]) -> list[IngestResult | BaseException]:
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
