"""The worker loop: claim due runs and execute them on a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from .processing import Processor, RunOutcome
from .store import ClaimedRun, StoreUnavailable

__all__ = ["Worker"]

log = logging.getLogger("payhook.worker")

MAX_OUTAGE_BACKOFF = 30.0
# On SQLite a stuck handler holds the write lock the hand-back needs; do not wait forever.
HAND_BACK_TIMEOUT = 5.0


class Worker:
    """Keeps up to `concurrency` handler runs going; wakes early when ingest says so.

    It holds up to twice `concurrency` claimed runs: the second half waits in the thread
    pool's queue, so a thread that finishes starts the next run at once, and claims are made
    a batch at a time rather than one run per finished run.
    """

    def __init__(
        self,
        processor: Processor,
        *,
        concurrency: int,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self.processor = processor
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="payhook-run")
        self._claims = ThreadPoolExecutor(1, thread_name_prefix="payhook-claim")
        self._active: dict[asyncio.Future[RunOutcome], tuple[Future[RunOutcome], ClaimedRun]] = {}
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def notify(self) -> None:
        """New runs may be due (call from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        outage = 0.0
        while not self._stopping:
            # Cleared before claiming, so a notify that arrives during the claim is kept.
            self._wake.clear()
            held = len(self._active)
            wanted = min(2 * self.concurrency - held, self.batch_size) if held <= self.concurrency else 0
            claimed: list[ClaimedRun] = []
            if wanted > 0:
                try:
                    claimed = await loop.run_in_executor(self._claims, self.processor.claim, wanted)
                    outage = 0.0
                except StoreUnavailable as exc:
                    outage = min(MAX_OUTAGE_BACKOFF, max(self.poll_interval, outage * 2))
                    log.warning("store unavailable (%s); next claim in %.1fs", exc, outage)
                    await self._sleep(outage)
                    continue
            for run in claimed:
                submitted = self._executor.submit(self._execute, run)
                future = asyncio.wrap_future(submitted, loop=loop)
                self._active[future] = (submitted, run)
                future.add_done_callback(self._finished)
            if claimed and len(claimed) == wanted:
                continue  # there may be more due right now
            await self._sleep(self.poll_interval)

    def _execute(self, run: ClaimedRun) -> RunOutcome:
        try:
            return self.processor.execute(run)
        except Exception as exc:
            # Typically the store went away mid-run; the lease expiry hands the run back.
            log.exception("run %s could not be completed; it is retried after its lease", run.id)
            raise exc

    def _finished(self, future: asyncio.Future[RunOutcome]) -> None:
        self._active.pop(future, None)
        self.notify()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def stop(self, grace: float = 30.0) -> int:
        """Stop claiming; wait up to `grace` seconds for the runs in progress.

        Runs still going after that are handed back (recorded as a failed attempt, due at
        once for another worker); their handlers can no longer commit, since the claim they
        hold is void. Returns how many were handed back.
        """
        self._stopping = True
        self.notify()
        loop = asyncio.get_running_loop()
        # Runs still queued were never started: give them back as they were.
        unstarted = [run for submitted, run in list(self._active.values()) if submitted.cancel()]
        if unstarted:
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._claims, self.processor.store.release, unstarted),
                    HAND_BACK_TIMEOUT,
                )
            except (TimeoutError, StoreUnavailable):
                log.warning("could not release unstarted runs; their leases will expire instead")
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace)
        abandoned = [run for future, (_, run) in self._active.items() if not future.done()]
        if abandoned:
            log.warning("%d runs still in progress after %.0fs; handing them back", len(abandoned), grace)
            try:
                await asyncio.wait_for(
                    loop.run_in_executor(self._claims, self.processor.abandon, abandoned), HAND_BACK_TIMEOUT
                )
            except (TimeoutError, StoreUnavailable):
                log.warning("could not hand the runs back; their leases will expire instead")
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._claims.shutdown(wait=False)
        return len(abandoned)
