"""CPU accounting from /proc: who used the two cores while a level ran.

The machine is shared: other sessions run tests on it. Counting the whole machine's busy
time next to ours and PostgreSQL's shows how much of a level's CPU went to strangers, so a
noisy measurement can be recognised instead of believed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Snapshot", "process_seconds", "snapshot"]

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


def _postgres() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                total += process_seconds(int(entry.name))
        except OSError:
            continue  # the process ended while we looked
    return total


@dataclass(frozen=True)
class Snapshot:
    machine: float
    postgres: float

    def cores_since(self, before: Snapshot, seconds: float) -> tuple[float, float]:
        """(machine, postgres) busy cores between `before` and this snapshot."""
        return (self.machine - before.machine) / seconds, (self.postgres - before.postgres) / seconds


def snapshot() -> Snapshot:
    return Snapshot(_machine_busy(), _postgres())
