"""A parent process that keeps N copies of one child process running (`serve --workers N`,
`worker --processes N`).

The parent does no payhook work itself: the command has already checked the configuration
and migrated the store before it starts the children, so nothing races at startup. The
children are started with multiprocessing's *spawn* method (a fresh interpreter, no threads
or connections copied from the parent) and are handed whatever the parent set up for them,
such as the listening socket that they all accept from.

* A child that exits while the parent is not stopping is replaced. One that keeps dying
  before it reports ready (see `Ready`), or within a few seconds of that, is restarted after
  a growing delay, and after MAX_QUICK_DEATHS such deaths in a row the parent gives up, stops
  the others and exits 1: a broken deployment should fail loudly, not spin. Readiness, not
  the time since the start, decides: a spawned interpreter may take many seconds to import
  everything on a busy machine.
* SIGTERM or SIGINT to the parent is passed on as SIGTERM to every child, each of which
  shuts down gracefully on its own. A child still running after `stop_timeout` seconds is
  killed, and the parent then exits 1; otherwise it exits 0.
* A child whose parent dies (SIGKILL, OOM) stops gracefully by itself (see `watch_parent`),
  so no orphan keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

__all__ = ["MAX_QUICK_DEATHS", "QUICK_DEATH_SECONDS", "Ready", "Supervisor", "watch_parent"]

log = logging.getLogger("payhook.supervisor")

# A child that dies within this many seconds of reporting ready counts as failing to start.
QUICK_DEATH_SECONDS = 10.0
MAX_QUICK_DEATHS = 5
# The delay before restarting a child that died quickly doubles from this, up to the cap.
FIRST_RESTART_DELAY = 0.5
LONGEST_RESTART_DELAY = 8.0
EXIT_GAVE_UP = 1

_spawn = multiprocessing.get_context("spawn")


class Ready:
    """Given to each child as its last argument: call it once the child does its job."""

    def __init__(self, connection: Connection) -> None:
        self._connection: Connection | None = connection

    def __call__(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):  # the parent is gone; watch_parent acts on that
                self._connection.send_bytes(b"ready")
            self._connection.close()
            self._connection = None


@dataclass
class _Slot:
    """One of the N places a child fills; it keeps its number across restarts."""

    number: int
    process: SpawnProcess | None = None
    ready: Connection | None = None  # readable once the child reported ready, or died
    ready_at: float | None = None
    quick_deaths: int = 0
    restart_at: float | None = None
    history: list[int] = field(default_factory=list)  # pids, oldest first


class Supervisor:
    """Runs `count` children, each `target(*args, number, count, ready)` in a spawned
    interpreter; `ready` is a `Ready` to call once the child is serving.

    `role` names them in log lines ("receiver", "worker"). `target` must be importable by
    name (a module-level function), since a spawned child imports it afresh.
    """

    def __init__(
        self,
        role: str,
        target: Callable[..., None],
        args: Sequence[Any],
        count: int,
        *,
        stop_timeout: float,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self.role = role
        self.target = target
        self.args = tuple(args)
        self.count = count
        self.stop_timeout = stop_timeout
        # Called once when stopping begins, before the children are told (say, to close the
        # parent's copy of the listening socket).
        self.on_stop = on_stop
        self.slots = [_Slot(number) for number in range(1, count + 1)]
        self._stopping: int | None = None  # the signal that asked us to stop
        self._gave_up = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    # -- running ---------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and keep them running until a signal; the exit status."""
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in signals}
        try:
            log.info("supervisor pid %d: starting %d %s processes", os.getpid(), self.count, self.role)
            for slot in self.slots:
                self._start(slot)
            while self._stopping is None and not self._gave_up:
                self._watch_once()
            return self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)

    def pids(self) -> list[int]:
        """The pids of the children alive now."""
        return [
            slot.process.pid
            for slot in self.slots
            if slot.process is not None and slot.process.pid is not None and slot.process.is_alive()
        ]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping is None:
            self._stopping = signum
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_write, b"\0")

    def _start(self, slot: _Slot) -> None:
        ready_read, ready_write = _spawn.Pipe(duplex=False)
        process = _spawn.Process(
            target=self.target,
            args=(*self.args, slot.number, self.count, Ready(ready_write)),
            name=f"payhook-{self.role}-{slot.number}",
        )
        process.start()
        # The child has its own copy now; with ours closed, the pipe ends when the child does.
        ready_write.close()
        slot.process, slot.ready, slot.ready_at, slot.restart_at = process, ready_read, None, None
        assert process.pid is not None
        slot.history.append(process.pid)
        log.info("%s %d/%d started: pid %d", self.role, slot.number, self.count, process.pid)

    def _watch_once(self) -> None:
        """Wait for a child to exit, a signal, or a restart to fall due; act on it."""
        now = time.monotonic()
        running = {slot.process.sentinel: slot for slot in self.slots if slot.process is not None}
        starting = {slot.ready: slot for slot in self.slots if slot.ready is not None}
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        timeout = max(0.0, min(due) - now) if due else None
        ready = wait([*running, *starting, self._wake_read], timeout)
        if self._wake_read in ready:
            os.read(self._wake_read, 512)
        for connection, slot in starting.items():
            if connection in ready:
                self._child_ready(slot, connection)
        for sentinel, slot in running.items():
            if sentinel in ready and self._stopping is None:
                self._child_died(slot)
        now = time.monotonic()
        for slot in self.slots:
            due_now = slot.restart_at is not None and slot.restart_at <= now
            if slot.process is None and due_now and self._stopping is None and not self._gave_up:
                self._start(slot)

    def _child_ready(self, slot: _Slot, connection: Connection) -> None:
        try:
            connection.recv_bytes()
            slot.ready_at = time.monotonic()
        except (EOFError, OSError):
            pass  # it died before it was ready: its sentinel says so too
        connection.close()
        slot.ready = None

    def _child_died(self, slot: _Slot) -> None:
        assert slot.process is not None
        process = slot.process
        process.join()
        if slot.ready is not None:
            slot.ready.close()
        slot.process = slot.ready = None
        status = _describe_exit(process.exitcode)
        served = None if slot.ready_at is None else time.monotonic() - slot.ready_at
        if served is not None and served >= QUICK_DEATH_SECONDS:
            slot.quick_deaths = 0
            log.warning(
                "%s %d/%d (pid %s) %s after %.0fs; starting a replacement",
                self.role,
                slot.number,
                self.count,
                process.pid,
                status,
                served,
            )
            slot.restart_at = time.monotonic()
            return
        slot.quick_deaths += 1
        when = "before it was ready" if served is None else f"{served:.1f}s after it was ready"
        if slot.quick_deaths >= MAX_QUICK_DEATHS:
            log.error(
                "%s %d/%d (pid %s) %s %s, the %d%s time in a row; giving up "
                "and stopping the other %s processes (see the lines above for why it failed)",
                self.role,
                slot.number,
                self.count,
                process.pid,
                status,
                when,
                slot.quick_deaths,
                _ordinal_suffix(slot.quick_deaths),
                self.role,
            )
            self._gave_up = True
            return
        delay = min(LONGEST_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (slot.quick_deaths - 1))
        log.warning(
            "%s %d/%d (pid %s) %s %s; restarting it in %.1fs",
            self.role,
            slot.number,
            self.count,
            process.pid,
            status,
            when,
            delay,
        )
        slot.restart_at = time.monotonic() + delay

    # -- stopping --------------------------------------------------------------------

    def _stop_all(self) -> int:
        """SIGTERM every child, wait for them up to stop_timeout, kill the rest."""
        if self._stopping is not None:
            log.info(
                "supervisor pid %d: %s received; stopping %d %s processes gracefully",
                os.getpid(),
                signal.Signals(self._stopping).name,
                len(self.pids()),
                self.role,
            )
        if self.on_stop is not None:
            self.on_stop()
        alive = [slot.process for slot in self.slots if slot.process is not None]
        for process in alive:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while (waiting := [p for p in alive if p.exitcode is None]) and time.monotonic() < deadline:
            wait([p.sentinel for p in waiting], max(0.0, deadline - time.monotonic()))
        killed = [p for p in alive if p.exitcode is None]
        for process in killed:
            log.error(
                "%s pid %s still running %.0fs after SIGTERM; killing it",
                self.role,
                process.pid,
                self.stop_timeout,
            )
            process.kill()
        for process in alive:
            process.join(5)
        if self._gave_up:
            return EXIT_GAVE_UP
        if killed:
            return EXIT_GAVE_UP
        log.info("supervisor pid %d: every %s process stopped", os.getpid(), self.role)
        return 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _ordinal_suffix(number: int) -> str:
    return {1: "st", 2: "nd", 3: "rd"}.get(number if number < 20 else number % 10, "th")


def watch_parent(on_parent_gone: Callable[[], None] | None = None) -> None:
    """In a spawned child: when the parent dies, stop this process as SIGTERM would.

    The kernel does not stop a child whose parent was killed; without this, receivers would
    keep accepting on the shared socket with nobody left to restart or stop them.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        log.warning("the supervisor (pid %s) is gone; stopping this process", parent.pid)
        if on_parent_gone is not None:
            on_parent_gone()
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="payhook-watch-parent", daemon=True).start()
