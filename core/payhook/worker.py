"""The worker loop: claim due runs and execute them on a bounded thread pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .processing import Processor, RunOutcome
from .runs import ClaimedRun
from .store import StoreUnavailable

__all__ = ["Worker"]

log = logging.getLogger("payhook.worker")

MAX_OUTAGE_BACKOFF = 30.0
# On SQLite a stuck handler may hold the write lock the hand-back needs; do not wait forever.
HAND_BACK_TIMEOUT = 5.0


class Worker:
    """Keeps up to `concurrency` handler runs going; wakes early when ingest says so.

    It holds up to twice `concurrency` claimed runs: the second half waits in the thread
    pool's queue, so a thread that finishes starts the next run at once, and claims are made
    a batch at a time rather than one run per finished run. `run()` may be called again
    after `stop()`; cancelling it ends it at once, wherever it waits.
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
        self._executor: ThreadPoolExecutor | None = None
        self._claims: ThreadPoolExecutor | None = None
        self._active: dict[asyncio.Future[RunOutcome], tuple[Future[RunOutcome], ClaimedRun]] = {}
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def notify(self) -> None:
        """New runs may be due (call from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="payhook-run")
        self._claims = ThreadPoolExecutor(1, thread_name_prefix="payhook-claim")
        try:
            await self._loop()
        finally:
            if not self._stopping:
                # Cancelled without stop(): runs still queued go back; running ones finish
                # in their threads or are reclaimed after their lease.
                self._release_queued_in_background()
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._claims.shutdown(wait=False)

    async def _loop(self) -> None:
        assert self._wake is not None and self._claims is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        outage = 0.0
        while not self._stopping:
            # Cleared before claiming, so a notify that arrives during the claim is kept.
            self._wake.clear()
            held = len(self._active)
            wanted = min(2 * self.concurrency - held, self.batch_size) if held <= self.concurrency else 0
            claimed: list[ClaimedRun] = []
            if wanted > 0:
                claiming = loop.run_in_executor(self._claims, self.processor.claim, wanted)
                try:
                    # Shielded: if we are cancelled mid-claim, the claim still ends, and what
                    # it took is given back rather than left running until its lease expires.
                    claimed = await asyncio.shield(claiming)
                    outage = 0.0
                except StoreUnavailable as exc:
                    outage = min(MAX_OUTAGE_BACKOFF, max(self.poll_interval, outage * 2))
                    log.warning("store unavailable (%s); next claim in %.1fs", exc, outage)
                    await self._sleep(outage)
                    continue
                except asyncio.CancelledError:
                    claiming.add_done_callback(self._release_orphaned_claim)
                    raise
            if self._stopping:
                self._release_in_background(claimed)
                return
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
        except Exception:
            # Typically the store went away mid-run; the lease expiry hands the run back.
            log.exception("run %s could not be completed; it is retried after its lease", run.id)
            raise

    def _finished(self, future: asyncio.Future[RunOutcome]) -> None:
        self._active.pop(future, None)
        if not future.cancelled():
            future.exception()  # retrieved: _execute logged it
        self.notify()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the wait ends, and the loop would go on after being cancelled.
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _release_orphaned_claim(self, claiming: asyncio.Future[list[ClaimedRun]]) -> None:
        if not claiming.cancelled() and claiming.exception() is None:
            self._release_in_background(claiming.result())

    def _release_queued_in_background(self) -> None:
        queued = [run for submitted, run in list(self._active.values()) if submitted.cancel()]
        self._release_in_background(queued)

    def _release_in_background(self, runs: list[ClaimedRun]) -> None:
        if not runs:
            return

        def release() -> None:
            try:
                self.processor.release(runs)
            except Exception as exc:
                log.warning(
                    "could not release %d claimed runs (%s); their leases will expire", len(runs), exc
                )

        threading.Thread(target=release, name="payhook-release", daemon=True).start()

    async def stop(self, grace: float = 30.0) -> int:
        """Stop claiming; wait up to `grace` seconds for the runs in progress.

        Runs still going after that are handed back (recorded as a failed attempt, due at
        once for another worker); their handlers can no longer commit, since the claim they
        hold is void. Returns how many were handed back.
        """
        self._stopping = True
        self.notify()
        if self._executor is None or self._claims is None:
            return 0
        loop = asyncio.get_running_loop()
        # Runs still queued were never started: give them back as they were.
        unstarted = [run for submitted, run in list(self._active.values()) if submitted.cancel()]
        if unstarted:
            try:
                async with asyncio.timeout(HAND_BACK_TIMEOUT):
                    await loop.run_in_executor(self._claims, self.processor.release, unstarted)
            except (TimeoutError, StoreUnavailable):
                log.warning("could not release unstarted runs; their leases will expire instead")
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace)
        abandoned = [run for future, (_, run) in self._active.items() if not future.done()]
        if abandoned:
            log.warning("%d runs still in progress after %.0fs; handing them back", len(abandoned), grace)
            try:
                async with asyncio.timeout(HAND_BACK_TIMEOUT):
                    await loop.run_in_executor(self._claims, self.processor.abandon, abandoned)
            except (TimeoutError, StoreUnavailable):
                log.warning("could not hand the runs back; their leases will expire instead")
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._claims.shutdown(wait=False)
        self._executor = self._claims = None
        return len(abandoned)
