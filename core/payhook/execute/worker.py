"""The worker: a claiming thread, runner threads (from `concurrency` up to
`max_concurrency`, see `RunnerGrowth`) and a thread that writes success marks, steered from
asyncio.

Runs never pass through the event loop: the claimer fills a queue that the runners drain,
and a finished run wakes the claimer directly. The loop only starts, stops and nudges it
(`notify()` after ingest stored new runs), so a worker inside `payhook serve` costs the
receiver nothing per run.

A run whose handler wrote nothing (and registered no after-commit work) has nothing to
commit but its success mark: its runner hands the mark to `SuccessMarks` and starts the next
run, and the marks that gathered meanwhile are committed together, in one statement on
PostgreSQL. Such a run counts as succeeded only once that commit returned.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from payhook.execute.processing import Processor, UnmarkedSuccess
from payhook.store.engine import StoreUnavailable
from payhook.store.runs import ClaimedRun

__all__ = ["RunnerGrowth", "SuccessMarks", "Window", "Worker"]

log = logging.getLogger("payhook.worker")

MAX_OUTAGE_BACKOFF = 30.0
# On SQLite a stuck handler may hold the write lock the hand-back needs; do not wait forever.
HAND_BACK_TIMEOUT = 5.0

# Runner growth (see RunnerGrowth). Seconds of work between two decisions:
GROWTH_WINDOW = 1.0
# Fewer finished runs than this say little about throughput: a busy window is prolonged (up
# to GROWTH_WINDOW_LIMIT windows) until this many have finished.
MIN_SAMPLE = 8
GROWTH_WINDOW_LIMIT = 4
# Share of the window the runners spent in runs: above SATURATED, runs were waiting for a
# runner; below IDLE, runners waited for runs.
SATURATED = 0.85
IDLE = 0.5
# Cores of CPU this process used: at this much, more threads only contend for the GIL.
CPU_BOUND = 0.75
# A probe must bring at least this share of the gain that more runners would bring if runs
# only waited (on the network): waits on the store's lock or the GIL bring much less.
GAIN_SHARE = 0.5
# Windows to wait after a probe that did not pay before probing again.
REST_WINDOWS = 10


@dataclass(frozen=True)
class Window:
    """What the runners did between two decisions."""

    runners: int
    seconds: float
    finished: int
    # Runner-seconds spent in runs (runs still going count up to the window's end).
    busy: float
    # CPU seconds of the whole process.
    cpu: float

    @property
    def rate(self) -> float:
        return self.finished / self.seconds

    @property
    def utilization(self) -> float:
        return self.busy / (self.runners * self.seconds)


class RunnerGrowth:
    """How many runners to keep, from `floor` up to `ceiling`: a hill climb on throughput.

    More runners help only runs that wait on something that can wait in parallel: a Stripe
    call waits on the network, and ten calls take as long as one. A run waiting for SQLite's
    one writer, or for the GIL, waits for something the others hold, and adding runners adds
    waiters, not throughput. Rather than guess from where a run's time goes, each growth is
    a probe: when the runners were busy all window (runs were waiting for them) and the
    process was not using a core already (then it is CPU-bound), runners are added, and kept
    only if throughput rose by at least GAIN_SHARE of what the added runners would bring to
    purely waiting runs. A probe that does not pay is undone, the next one is smaller and
    comes only after REST_WINDOWS. When runners sit idle, they shrink back to what the load
    needs, and down to `floor` when there is none.
    """

    def __init__(self, floor: int, ceiling: int) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self.target = floor
        # Runners the next probe adds: first as many as there are (doubling).
        self._step = floor
        # The runners before the probe under way, and the throughput they had.
        self._probe: tuple[int, float] | None = None
        self._rest = 0

    def decide(self, window: Window) -> int:
        """The runners to keep after `window` (measured with `window.runners`)."""
        probe, self._probe = self._probe, None
        if window.utilization < IDLE:
            busy_runners = window.busy / window.seconds
            self.target = max(self.floor, min(self.target, math.ceil(busy_runners / SATURATED)))
            self._step, self._rest = max(1, self.target), 0
            return self.target
        if probe is not None:
            before, before_rate = probe
            ideal = window.runners / before
            if not window.rate > before_rate * (1 + GAIN_SHARE * (ideal - 1)):
                self.target = before
                self._step = max(1, (window.runners - before) // 2)
                self._rest = REST_WINDOWS
                return self.target
            self._step = max(self._step, self.target // 2)
        if self._rest > 0:
            self._rest -= 1
            return self.target
        cpu_bound = window.cpu / window.seconds >= CPU_BOUND
        if window.utilization < SATURATED or cpu_bound or window.finished == 0 or self.target >= self.ceiling:
            return self.target
        self._probe = (self.target, window.rate)
        self.target = min(self.ceiling, self.target + self._step)
        return self.target


class SuccessMarks:
    """Success marks waiting to be committed, and the thread that commits them in batches.

    While one batch commits, the next gathers. At most `limit` marks wait: past that a
    runner waits for room, so a slow store slows the runners down instead of piling up
    claimed runs. Until its mark commits a run stays `running` under its lease: if this
    process dies first, the run is reclaimed after the lease and runs again.
    """

    def __init__(self, processor: Processor, limit: int) -> None:
        self._processor = processor
        self._limit = max(1, limit)
        self._pending: list[UnmarkedSuccess] = []
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, name="payhook-marks", daemon=True)
        self._thread.start()

    def add(self, finished: UnmarkedSuccess) -> None:
        """Queue a run's success mark (from a runner thread)."""
        with self._condition:
            while len(self._pending) >= self._limit and self._writing():
                self._condition.wait()
            if self._writing():
                self._pending.append(finished)
                self._condition.notify_all()
                return
        # The writer is gone (a handler that outlived the worker's stop): write it here.
        self._commit([finished])

    def close(self, timeout: float | None = None) -> bool:
        """Commit what waits, then end the thread; False if that took longer than `timeout`."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _writing(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not (self._closing and not self._pending)

    def _write(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closing:
                    self._condition.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._condition.notify_all()  # room for runners waiting in add()
            self._commit(batch)

    def _commit(self, batch: list[UnmarkedSuccess]) -> None:
        try:
            self._processor.mark_succeeded(batch)
        except StoreUnavailable as exc:
            log.warning(
                "could not record %d runs as succeeded (%s); they run again after their leases",
                len(batch),
                exc,
            )
        except Exception:
            log.exception(
                "could not record %d runs as succeeded; they run again after their leases", len(batch)
            )


class Worker:
    """Keeps handler runs going on its runners; wakes early when told new runs are due.

    It starts `concurrency` runners, and adds runners up to `max_concurrency` while that
    raises throughput (runs that wait on the network), then drops them when idle (see
    `RunnerGrowth`). It holds up to twice as many claimed runs as runners: the second half
    waits in the queue, so a runner that finishes starts the next run at once, and claims
    are made a batch at a time. When runs finish faster than a claim comes back, it holds
    more (see `_hold_for`), so the runners do not sit idle while the next claim is on its
    way. `run()` may be called again after `stop()`; cancelling it ends it at once.
    """

    def __init__(
        self,
        processor: Processor,
        *,
        concurrency: int,
        batch_size: int,
        poll_interval: float,
        listen: Callable[[threading.Event, threading.Event], None] | None = None,
        pause: Callable[[], float] | None = None,
        max_concurrency: int | None = None,
        growth_window: float = GROWTH_WINDOW,
    ) -> None:
        self.processor = processor
        self.concurrency = concurrency
        # None: `[processing] max_concurrency`; never fewer than `concurrency`.
        ceiling = processor.config.processing.max_concurrency if max_concurrency is None else max_concurrency
        self.max_concurrency = max(concurrency, ceiling)
        self.growth_window = growth_window
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # listen(wake, stop): blocks, setting `wake` whenever new runs may be due (PostgreSQL
        # LISTEN), until `stop` is set.
        self._listen = listen
        # pause(): seconds a runner should wait before starting a run (the receiver in the
        # same process is busy answering deliveries); 0 when idle.
        self._pause = pause
        self._condition = threading.Condition()
        self._queue: deque[ClaimedRun] = deque()
        self._running: dict[int, ClaimedRun] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._threads: list[threading.Thread] = []
        self._marks = SuccessMarks(processor, self._marks_limit())
        # How many claimed runs to hold (queued + running), and how many runners took so far.
        self._hold = 2 * concurrency
        self._taken = 0
        self._growth = RunnerGrowth(concurrency, self.max_concurrency)
        # Runner threads alive, and how many there should be (a surplus ends after its run).
        self._runners = 0
        self._target = concurrency
        self._runner_names = 0
        # The current growth window: when it began, the process's CPU time then, runs
        # finished and runner-seconds spent in them since, and when each run going began.
        self._window_began = 0.0
        self._window_cpu = 0.0
        self._finished = 0
        self._busy_seconds = 0.0
        self._run_began: dict[int, float] = {}

    def _marks_limit(self) -> int:
        return 2 * max(self.max_concurrency, self.batch_size)

    @property
    def runners(self) -> int:
        """Runner threads alive now."""
        with self._condition:
            return self._runners

    def notify(self) -> None:
        """New runs may be due (safe from any thread)."""
        self._wake.set()

    async def run(self) -> None:
        """Run until `stop()`; cancelling this ends it at once (running handlers finish)."""
        self._stop.clear()
        self._stopped = asyncio.Event()
        self._marks = SuccessMarks(self.processor, self._marks_limit())
        self._marks.start()
        with self._condition:
            self._growth = RunnerGrowth(self.concurrency, self.max_concurrency)
            self._target = self.concurrency
            self._hold = 2 * self.concurrency
            self._new_window(time.monotonic())
        self._threads = [threading.Thread(target=self._claimer, name="payhook-claim", daemon=True)]
        if self._listen is not None:
            listener = threading.Thread(
                target=self._listen, args=(self._wake, self._stop), name="payhook-listen", daemon=True
            )
            self._threads.append(listener)
        for thread in self._threads:
            thread.start()
        with self._condition:
            self._add_runners(self.concurrency)
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            # Cancelled without stop(): queued runs go back; running ones finish in their
            # threads, or are reclaimed after their lease.
            self._halt()
            self._release_in_background(self._take_queued())
            # Marks already handed over are still committed, by the writer's own thread.
            self._marks.close(timeout=0)
            raise

    # -- threads -----------------------------------------------------------------------

    def _claimer(self) -> None:
        outage = 0.0
        while not self._stop.is_set():
            # Cleared before claiming, so a notify that arrives during the claim is kept.
            self._wake.clear()
            self._adjust_runners()
            with self._condition:
                held = len(self._queue) + len(self._running)
                taken_before = self._taken
            wanted = min(self._hold - held, self.batch_size) if held <= self._hold // 2 else 0
            claimed: list[ClaimedRun] = []
            if wanted > 0:
                try:
                    claimed = self.processor.claim(wanted)
                    outage = 0.0
                    with self._condition:
                        taken = self._taken - taken_before
                        # Runners that took what there was and now idle: the hold ran out
                        # before the claim came back.
                        ran_dry = taken > 0 and not self._queue and len(self._running) < self._runners
                        self._hold = self._hold_for(taken, ran_dry)
                except StoreUnavailable as exc:
                    outage = min(MAX_OUTAGE_BACKOFF, max(self.poll_interval, outage * 2))
                    log.warning("store unavailable (%s); next claim in %.1fs", exc, outage)
                    self._stop.wait(outage)
                    continue
                except Exception:
                    log.exception("claiming runs failed; trying again after the poll interval")
            if claimed:
                with self._condition:
                    if self._stop.is_set():
                        self._release_in_background(claimed)
                        return
                    self._queue.extend(claimed)
                    self._condition.notify(len(claimed))
                if len(claimed) == wanted:
                    continue  # there may be more due right now
            self._wake.wait(self.poll_interval)

    def _hold_for(self, taken_during_claim: int, ran_dry: bool) -> int:
        """Runs to hold, given how many the runners took while the last claim was under way,
        and whether they ran out of runs before it came back.

        A new claim starts once half of what is held is gone; for the runners not to run dry
        before it comes back, that half must last a claim's round trip. Slow handlers take
        few runs meanwhile and keep the hold at twice the runners, so runs are not kept
        from other workers; fast ones raise it (doubling it while the runners still run dry,
        since what they took is then only what there was), up to two claims' worth.
        """
        floor = 2 * self._target
        wanted = 2 * self._hold if ran_dry else 2 * taken_during_claim
        return max(floor, min(wanted, max(floor, 2 * self.batch_size)))

    def _runner(self) -> None:
        me = threading.get_ident()
        while True:
            with self._condition:
                while not self._queue and not self._stop.is_set() and self._runners <= self._target:
                    self._condition.wait()
                if self._stop.is_set() or self._runners > self._target:
                    self._runners -= 1
                    return
                run = self._queue.popleft()
                self._running[me] = run
                self._run_began[me] = time.monotonic()
                self._taken += 1
            try:
                if self._pause is not None:
                    self._yield_to_receiver()
                self.processor.execute_or_defer(run, self._marks.add)
            except Exception:
                # Typically the store went away mid-run; the lease expiry hands the run back.
                log.exception("run %s could not be completed; it is retried after its lease", run.id)
            finally:
                with self._condition:
                    self._running.pop(me, None)
                    began = self._run_began.pop(me, None)
                    if began is not None:
                        self._finished += 1
                        self._busy_seconds += time.monotonic() - max(began, self._window_began)
                    low = len(self._queue) + len(self._running) <= self._hold // 2
                    if self._stop.is_set():
                        # stop() waits for the runners; while running, waking every idle
                        # runner at each finished run would only cost the others the GIL.
                        self._condition.notify_all()
                if low:
                    self._wake.set()

    def _add_runners(self, count: int) -> None:
        """Start `count` runner threads (with the condition held)."""
        for _ in range(count):
            self._runner_names += 1
            thread = threading.Thread(
                target=self._runner, name=f"payhook-run-{self._runner_names}", daemon=True
            )
            self._runners += 1
            thread.start()

    def _new_window(self, now: float) -> None:
        self._window_began = now
        self._window_cpu = time.process_time()
        self._finished = 0
        self._busy_seconds = 0.0

    def _adjust_runners(self) -> None:
        """Once a growth window has passed, let `RunnerGrowth` say how many runners to keep."""
        if self.max_concurrency == self.concurrency:
            return
        now = time.monotonic()
        with self._condition:
            seconds = now - self._window_began
            if seconds < self.growth_window or self._stop.is_set():
                return
            busy = self._busy_seconds + sum(
                now - max(began, self._window_began) for began in self._run_began.values()
            )
            window = Window(
                self._runners, seconds, self._finished, busy, time.process_time() - self._window_cpu
            )
            if (
                window.finished < MIN_SAMPLE
                and window.utilization >= IDLE
                and seconds < GROWTH_WINDOW_LIMIT * self.growth_window
            ):
                return  # busy, but too few runs finished to tell a rate: gather more
            target = self._growth.decide(window)
            self._new_window(now)
            if target != self._target:
                log.debug("handler runners: %d -> %d (%.1f runs/s)", self._target, target, window.rate)
            self._target = target
            if target > self._runners:
                self._hold = max(self._hold, 2 * target)
                self._add_runners(target - self._runners)
            elif target < self._runners:
                self._condition.notify_all()  # idle surplus runners end now, busy ones after their run

    def _yield_to_receiver(self) -> None:
        assert self._pause is not None
        # Bounded, so a receiver that never idles still lets runs through, only slower.
        deadline = time.monotonic() + 0.05
        while (delay := self._pause()) > 0 and time.monotonic() < deadline:
            if self._stop.wait(min(delay, 0.005)):
                return

    # -- stopping ----------------------------------------------------------------------

    def _halt(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._condition:
            self._condition.notify_all()

    def _take_queued(self) -> list[ClaimedRun]:
        with self._condition:
            queued = list(self._queue)
            self._queue.clear()
        return queued

    def _release_in_background(self, runs: list[ClaimedRun]) -> None:
        if runs:
            release = threading.Thread(
                target=self.processor.release_or_let_expire,
                args=(runs, "claimed"),
                name="payhook-release",
                daemon=True,
            )
            release.start()

    async def stop(self, grace: float = 30.0) -> int:
        """Stop claiming; wait up to `grace` seconds for the runs in progress.

        Runs still queued go back untouched. Runs still going after `grace` are handed back
        (recorded as a failed attempt, due at once for another worker); their handlers can no
        longer commit, since the claim they hold is void. Returns how many were handed back.
        """
        self._halt()
        if self._stopped is None:
            return 0
        unstarted = self._take_queued()
        if unstarted:
            try:
                async with asyncio.timeout(HAND_BACK_TIMEOUT):
                    await asyncio.to_thread(self.processor.release, unstarted)
            except (TimeoutError, StoreUnavailable):
                log.warning("could not release unstarted runs; their leases will expire instead")
        deadline = time.monotonic() + grace
        while self._busy() and time.monotonic() < deadline:
            await asyncio.to_thread(self._wait_for_runners, min(0.1, max(0.0, deadline - time.monotonic())))
        with self._condition:
            abandoned = list(self._running.values())
        if abandoned:
            log.warning("%d runs still in progress after %.0fs; handing them back", len(abandoned), grace)
            try:
                async with asyncio.timeout(HAND_BACK_TIMEOUT):
                    await asyncio.to_thread(self.processor.abandon, abandoned)
            except (TimeoutError, StoreUnavailable):
                log.warning("could not hand the runs back; their leases will expire instead")
        # The finished runs' marks still waiting are committed before the worker says stopped.
        if not await asyncio.to_thread(self._marks.close, HAND_BACK_TIMEOUT):
            log.warning(
                "success marks still being written after %.0fs; not waiting for them", HAND_BACK_TIMEOUT
            )
        self._stopped.set()
        return len(abandoned)

    def _busy(self) -> bool:
        with self._condition:
            return bool(self._running)

    def _wait_for_runners(self, seconds: float) -> None:
        with self._condition:
            if self._running:
                self._condition.wait(seconds)
