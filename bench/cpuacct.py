"""CPU accounting from /proc: who used the two cores while a level ran.

The machine is shared: other sessions run tests on it. Counting the whole machine's busy
time next to ours and PostgreSQL's shows how much of a level's CPU went to strangers, so a
noisy measurement can be recognised instead of believed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Meter", "Snapshot", "process_seconds", "snapshot", "wait_quiet"]

TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    # The command name (field 2) may contain spaces; the fields we want follow its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _machine_busy() -> float:
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / TICK


def _postgres() -> dict[int, float]:
    """CPU seconds per PostgreSQL process (server and backends)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                found[int(entry.name)] = process_seconds(int(entry.name))
        except OSError:
            continue  # the process ended while we looked
    return found


@dataclass(frozen=True)
class Snapshot:
    machine: float
    postgres: dict[int, float]

    def cores_since(self, before: Snapshot, seconds: float) -> tuple[float, float]:
        """(machine, postgres) busy cores between `before` and this snapshot.

        A backend that started in between counts from zero; one that ended is lost (its
        time is then counted as "other" by whoever subtracts).
        """
        postgres = sum(spent - before.postgres.get(pid, 0.0) for pid, spent in self.postgres.items())
        return (self.machine - before.machine) / seconds, postgres / seconds


def snapshot() -> Snapshot:
    return Snapshot(_machine_busy(), _postgres())


def wait_quiet(threshold: float, timeout: float, window: float = 1.0) -> float:
    """Wait until the machine is busy with less than `threshold` cores over `window` seconds.

    Call it between levels, when the benchmark itself is idle, to dodge other people's test
    bursts. Gives up after `timeout` seconds; returns the last busy-cores reading.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = _machine_busy()
        time.sleep(window)
        busy = (_machine_busy() - before) / window
        if busy < threshold or time.monotonic() >= deadline:
            return busy


class Meter:
    """Cores used by named groups of processes, PostgreSQL, this process and everyone else.

    Starts counting when created; `cores()` reads the interval since. "client" is this
    process (load generator and harness polls), "other" the rest of the machine.
    """

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.before = {name: self._group(pids) for name, pids in self.groups.items()}
        self.machine = snapshot()
        self.client = time.process_time()
        self.started = time.monotonic()

    @staticmethod
    def _group(pids: Sequence[int]) -> float:
        return sum(process_seconds(pid) for pid in pids)

    def cores(self) -> dict[str, float]:
        seconds = time.monotonic() - self.started
        used = {name: (self._group(pids) - self.before[name]) / seconds for name, pids in self.groups.items()}
        machine, db = snapshot().cores_since(self.machine, seconds)
        used["db"] = db
        used["client"] = (time.process_time() - self.client) / seconds
        used["other"] = max(0.0, machine - sum(used.values()))
        return {name: round(value, 2) for name, value in used.items()}
