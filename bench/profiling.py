"""Sample a server with py-spy while a load runs, and summarise where its time went.

Summarise a saved profile: python bench/profiling.py PROFILE.txt [--top N]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

__all__ = ["VIEWS", "record", "summarize"]

PY_SPY = Path(sys.executable).parent / "py-spy"

# Two views of the same kind of load. "threads": every thread that is not idle, so lock and
# GIL waits show up where they happen. "gil": only the thread holding the GIL, i.e. where the
# interpreter's one core of Python actually goes.
VIEWS = {"threads": ["--threads"], "gil": ["--gil", "--threads"]}

# py-spy frames look like "function (path/to/module.py:123)"; the line number is dropped so
# that one function's samples add up.
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "core/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int = 20) -> str:
    """Self and inclusive time per function, and per thread, as plain text."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame]
        if frames and frames[0].startswith(("thread ", "process ")):
            # --threads puts the thread (and --subprocesses the process) first.
            threads[frames[0]] += count
            frames = [frame for frame in frames if not frame.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += count
        names = [_name(frame) for frame in frames]
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return f"{path}: no samples\n"

    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"{title} ({total} samples)"]
        rows += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]
        return rows

    lines = [*table("self time", own), "", *table("inclusive time", inclusive)]
    if threads:
        lines += ["", *table("per thread", threads)]
    return "\n".join(lines) + "\n"


def record(
    targets: dict[str, int], folder: Path, view: str, load: Callable[[], object], rate: int = 250
) -> str:
    """Run `load()` while py-spy samples each named process; return the summaries."""
    spies = {}
    for name, pid in targets.items():
        raw = folder / f"profile-{view}-{name}.txt"
        argv = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
        argv += ["--nonblocking", *VIEWS[view], "-o", str(raw)]
        spies[name] = (raw, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # let py-spy attach before the load starts
    try:
        load()
    finally:
        for _, spy in spies.values():
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _, spy in spies.values():
            spy.wait(30)
    parts = []
    for name, (raw, _) in spies.items():
        if raw.exists():
            parts.append(f"{name}, view {view}:\n{summarize(raw)}")
        else:
            parts.append(f"{name}: py-spy wrote no {raw.name} (is py-spy installed, is ptrace allowed?)\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summarize(args.profile, args.top), end="")


if __name__ == "__main__":
    main()
