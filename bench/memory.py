"""Memory flat: the RSS of `payhook serve` and `payhook worker` as events and handler runs pile up.

    .venv/bin/python bench/memory.py --events 100000 --core-rev HEAD
    .venv/bin/python bench/memory.py --backend postgres --mode inline --events 100000
    .venv/bin/python bench/memory.py --events 20000 --tracemalloc      # where did it grow?

Every tenant enables the bench plugin, whose handler merges one row per handled event. By
default (`--mix handled`) every event is of a handled type, so each one makes a handler run.
Events go out in chunks (`--chunk`) over `--concurrency` keep-alive connections (closed
loop); after each chunk the harness waits until the worker has run every handler, so the
backlog stays bounded by one chunk. Every `--sample-every` events, once drained, it reads each
process's VmRSS (and VmHWM, its peak) from /proc/<pid>/status.

Modes: `split`, `payhook serve --no-worker` plus one `payhook worker`; `inline`, the default
deployment, the worker inside `payhook serve`. The verdict compares the last sample with the
first (after `--sample-every` events, 10,000 by default): growth above `--limit-mb` fails,
and so does a lost event or run; then the exit status is 1.

`--tracemalloc` is for finding where memory grows: it starts the processes with tracemalloc
on (one frame) and, at each sample, has each process dump a snapshot; the report then
lists the lines whose live allocations grew the most between the first and the last
sample, and the Python heap's growth. The processes run slower, and their RSS includes
tracemalloc's own bookkeeping, so that run gives no RSS verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import dbcheck
import servers
from loadgen import build_requests, new_loop, run_level
from report import machine
from scenario import PLUGIN, make_tenants

BENCH = Path(__file__).resolve().parent
MODES = ("split", "inline")
SNAPSHOT_DIR_ENV = "PAYHOOK_MEMORY_SNAPSHOTS"
# One frame: the top allocations by line is what the report lists; each extra frame slows
# every allocation and adds to the RSS being measured.
TRACE_FRAMES = 1

# Loaded by every Python process whose PYTHONPATH holds its folder (the payhook processes
# under --tracemalloc): a daemon thread that writes a tracemalloc snapshot whenever the
# harness drops a request file, so the processes need no change and no signal handler.
SNAPSHOT_HOOK = """
import gc, os, threading, time, tracemalloc

def _serve_snapshots(folder):
    me = str(os.getpid())
    while True:
        time.sleep(0.2)
        for name in os.listdir(folder):
            if name.startswith(f"request-{me}-"):
                label = name.split("-", 2)[2]
                gc.collect()  # what is still held, not cyclic garbage the collector has yet to free
                tracemalloc.take_snapshot().dump(os.path.join(folder, f"snapshot-{me}-{label}.tmp"))
                os.rename(
                    os.path.join(folder, f"snapshot-{me}-{label}.tmp"),
                    os.path.join(folder, f"snapshot-{me}-{label}"),
                )
                os.remove(os.path.join(folder, name))

_folder = os.environ.get("PAYHOOK_MEMORY_SNAPSHOTS")
if _folder and tracemalloc.is_tracing():
    threading.Thread(target=_serve_snapshots, args=(_folder,), name="memory-snapshots", daemon=True).start()
"""


@dataclass
class Sample:
    """Both processes' memory once `events` events were answered and their runs finished."""

    events: int
    runs_succeeded: int
    seconds: float  # since the first event was sent
    rss_mib: dict[str, float]
    peak_mib: dict[str, float]


@dataclass
class Outcome:
    backend: str
    mode: str
    mix: str
    events: int
    concurrency: int
    chunk: int
    limit_mb: float
    samples: list[Sample] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    http_errors: int = 0
    tracemalloc_top: dict[str, list[str]] = field(default_factory=dict)

    def growth_mib(self) -> dict[str, float]:
        first, last = self.samples[0], self.samples[-1]
        return {name: round(last.rss_mib[name] - first.rss_mib[name], 1) for name in first.rss_mib}

    @property
    def flat(self) -> bool:
        if self.tracemalloc_top:
            return True  # traced processes: their RSS is not comparable, see the module doc
        return len(self.samples) >= 2 and all(
            growth <= self.limit_mb for growth in self.growth_mib().values()
        )

    @property
    def ok(self) -> bool:
        return self.flat and bool(self.checks.get("ok"))


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MiB, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return round(fields["VmRSS"], 1), round(fields["VmHWM"], 1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mode", choices=[*MODES, "all"], default="split")
    parser.add_argument("--events", type=int, default=100_000, help="events sent in all")
    parser.add_argument(
        "--sample-every", type=int, default=10_000, help="events between RSS samples (the first is the base)"
    )
    parser.add_argument("--chunk", type=int, default=2_000, help="events sent before waiting for the runs")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections, closed loop")
    parser.add_argument(
        "--mix",
        choices=("handled", "ingest"),
        default="handled",
        help="handled: every event makes a run; ingest: the ingest benchmark's mix (37%% handled)",
    )
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument(
        "--limit-mb", type=float, default=20.0, help="allowed RSS growth, first to last sample"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between drained and sampled")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for one chunk")
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for a chunk's runs"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations; report the top lines")
    parser.add_argument(
        "--core-rev", default=None, help="run core/ as committed at this revision (e.g. HEAD)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="work folder (default bench/out/memory-<time>)"
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args(argv)
    if args.sample_every % args.chunk and args.chunk % args.sample_every:
        parser.error("--sample-every and --chunk must divide one another")
    if args.events < 2 * args.sample_every:
        parser.error("--events must allow two samples (at least twice --sample-every)")
    return args


@contextmanager
def traced(workdir: Path) -> Iterator[Path]:
    """The payhook processes started meanwhile trace allocations and dump snapshots on request."""
    hook = workdir / "snapshot-hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SNAPSHOT_HOOK, encoding="utf-8")
    snapshots = workdir / "snapshots"
    snapshots.mkdir(exist_ok=True)
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONTRACEMALLOC", SNAPSHOT_DIR_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), saved["PYTHONPATH"]]))
    os.environ["PYTHONTRACEMALLOC"] = str(TRACE_FRAMES)
    os.environ[SNAPSHOT_DIR_ENV] = str(snapshots)
    try:
        yield snapshots
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def request_snapshots(folder: Path, pids: dict[str, int], label: str, timeout: float = 120.0) -> None:
    """Ask each process for a snapshot labelled `label` and wait until all are written."""
    for pid in pids.values():
        (folder / f"request-{pid}-{label}").touch()
    deadline = time.monotonic() + timeout
    while not all((folder / f"snapshot-{pid}-{label}").exists() for pid in pids.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no tracemalloc snapshot {label} within {timeout:.0f}s")
        time.sleep(0.2)


def top_growth(folder: Path, pid: int, first: str, last: str, top: int = 15) -> list[str]:
    """The lines that allocated the most (still held) between two snapshots of one process."""
    before = tracemalloc.Snapshot.load(str(folder / f"snapshot-{pid}-{first}"))
    after = tracemalloc.Snapshot.load(str(folder / f"snapshot-{pid}-{last}"))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    grown = sum(stat.size_diff for stat in diff) / 2**20
    heap = f"traced Python heap: {grown:+.2f} MiB from sample {first} to sample {last}"
    return [heap, *(str(stat) for stat in diff[:top])]


def send_chunk(port: int, requests: list[Any], concurrency: int, timeout: float) -> int:
    """Send prepared requests closed loop; the number that were not answered 200."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        level = runner.run(run_level(requests, concurrency, servers.HOST, port, timeout))
    return level.errors


def measure(backend: str, mode: str, args: argparse.Namespace, workdir: Path) -> Outcome:
    """One fresh database and fresh processes; `args.events` events, sampled as they go."""
    from payhook_bench import HANDLED_TYPES, create_tables

    workdir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(backend, mode, args.mix, args.events, args.concurrency, args.chunk, args.limit_mb)
    tenants = make_tenants(args.tenants)
    inline = mode == "inline"
    with ExitStack() as stack:
        snapshots = stack.enter_context(traced(workdir)) if args.tracemalloc else None
        url = stack.enter_context(servers.database(backend))
        config = servers.write_config(workdir / "payhook.toml", url, tenants, (PLUGIN,), worker=inline)
        if backend == "postgres":
            servers.upgrade_database(config, workdir, (PLUGIN,))
        engine = dbcheck.connect(url)
        stack.callback(engine.dispose)
        port = servers.free_port()
        processes = {"serve": servers.start_server(config, port, workdir, (PLUGIN,), worker=inline)}
        stack.callback(processes["serve"].stop)
        create_tables(engine)  # serve migrated SQLite; the handler's table comes before any event
        if not inline:
            processes["worker"] = servers.start_worker(config, workdir, (PLUGIN,))
            stack.callback(processes["worker"].stop)  # callbacks run last in, first out
        pids = {name: process.pid for name, process in processes.items()}

        sent: list[tuple[str, str]] = []  # (tenant, event id): the exactly-once check at the end
        runs = 0
        started = time.monotonic()
        while len(sent) < args.events:
            count = min(args.chunk, args.events - len(sent))
            requests = build_requests(
                count, tenants, HANDLED_TYPES, servers.HOST, port, only_handled=args.mix == "handled"
            )
            outcome.http_errors += send_chunk(port, requests, args.concurrency, args.timeout)
            sent += [(request.tenant, request.event_id) for request in requests]
            runs += sum(request.handled for request in requests)
            del requests
            drain = dbcheck.wait_drained(engine, runs, time.monotonic(), args.drain_timeout)
            for process in processes.values():
                process.check_alive()
            if drain.seconds is None:
                raise RuntimeError(f"runs not drained within {args.drain_timeout:.0f}s: {drain.statuses}")
            if len(sent) % args.sample_every == 0 or len(sent) == args.events:
                time.sleep(args.settle)
                memory = {name: memory_mib(pid) for name, pid in pids.items()}
                outcome.samples.append(
                    Sample(
                        events=len(sent),
                        runs_succeeded=drain.statuses.get("succeeded", 0),
                        seconds=round(time.monotonic() - started, 1),
                        rss_mib={name: rss for name, (rss, _) in memory.items()},
                        peak_mib={name: peak for name, (_, peak) in memory.items()},
                    )
                )
                if snapshots is not None:
                    request_snapshots(snapshots, pids, str(len(sent)))
                print(f"  {backend}/{mode} {describe(outcome.samples[-1])}", flush=True)

        stored = dbcheck.check_stored(engine, sent)
        statuses = dbcheck.run_statuses(engine)
        hits = dbcheck.hits(engine)
        outcome.checks = {
            "ok": stored.ok and outcome.http_errors == 0 and statuses == {"succeeded": runs} and hits == runs,
            "events_sent": stored.sent,
            "stored_exactly_once": stored.ok,
            "runs_expected": runs,
            "run_statuses": statuses,
            "bench_hits": hits,
            "http_errors": outcome.http_errors,
        }
        if snapshots is not None:
            first, last = str(outcome.samples[0].events), str(outcome.samples[-1].events)
            outcome.tracemalloc_top = {
                name: top_growth(snapshots, pid, first, last) for name, pid in pids.items()
            }
    return outcome


def describe(sample: Sample) -> str:
    memory = "  ".join(
        f"{name} {rss:6.1f} MiB (peak {sample.peak_mib[name]:.1f})" for name, rss in sample.rss_mib.items()
    )
    return f"{sample.events:>7,} events {sample.runs_succeeded:>7,} runs {sample.seconds:6.0f}s  {memory}"


def markdown(info: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    lines = [
        f"payhook {info['commit']}{' (dirty tree)' if info.get('dirty') else ''}, {info['date']}, "
        f"{info['machine']} ({info['nproc']} cores, shared), Python {info['python']}",
        "",
        "| backend | mode | process | RSS after first sample | RSS at the end | growth | peak | verdict |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for outcome in outcomes:
        first, last = outcome.samples[0], outcome.samples[-1]
        for name, growth in outcome.growth_mib().items():
            verdict = "flat" if growth <= outcome.limit_mb else f"**grew > {outcome.limit_mb:g} MiB**"
            if outcome.tracemalloc_top:
                verdict = "not judged (tracemalloc)"
            lines.append(
                f"| {outcome.backend} | {outcome.mode} | {name} | {first.rss_mib[name]:.1f} MiB "
                f"({first.events:,} events) | {last.rss_mib[name]:.1f} MiB ({last.events:,} events) | "
                f"{growth:+.1f} MiB | {last.peak_mib[name]:.1f} MiB | {verdict} |"
            )
    for outcome in outcomes:
        names = list(outcome.samples[0].rss_mib)
        lines += [
            "",
            f"{outcome.backend} / {outcome.mode}: {outcome.events:,} events ({outcome.mix} mix), "
            f"{outcome.concurrency} connections, drained every {outcome.chunk:,} events; checks "
            + ("ok" if outcome.checks.get("ok") else f"**FAILED** {outcome.checks}"),
            "",
            "| events | runs succeeded | seconds | " + " | ".join(f"{name} RSS MiB" for name in names) + " |",
            "|---:|---:|---:|" + "---:|" * len(names),
        ]
        for sample in outcome.samples:
            cells = [f"{sample.events:,}", f"{sample.runs_succeeded:,}", f"{sample.seconds:.0f}"]
            cells += [f"{sample.rss_mib[name]:.1f}" for name in names]
            lines.append("| " + " | ".join(cells) + " |")
        for name, top in outcome.tracemalloc_top.items():
            lines += ["", f"tracemalloc, {name}, first to last sample (top lines):", "", "```", *top, "```"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if PLUGIN not in {entry_point.name for entry_point in entry_points(group="payhook")}:
        sys.exit("the bench plugin is not installed: .venv/bin/pip install -e bench/benchplugin")
    out = (args.out or BENCH / "out" / time.strftime("memory-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    if args.core_rev:
        info.update(
            commit=servers.use_core_rev(args.core_rev, out), dirty=False, core="exported with git archive"
        )
    print(f"payhook memory bench at {info['commit']} on {info['nproc']} cores; work folder {out}", flush=True)
    modes = MODES if args.mode == "all" else (args.mode,)
    outcomes = [measure(args.backend, mode, args, out / f"{args.backend}-{mode}") for mode in modes]

    text = markdown(info, outcomes)
    print("\n" + text)
    result = {
        "info": info,
        "outcomes": [
            {**asdict(outcome), "growth_mib": outcome.growth_mib(), "flat": outcome.flat, "ok": outcome.ok}
            for outcome in outcomes
        ],
    }
    body = json.dumps(result, indent=2) + "\n"
    (out / "results.json").write_text(body)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(body)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        print(
            f"FAILED: {outcome.backend}/{outcome.mode}: growth {outcome.growth_mib()} MiB "
            f"(limit {outcome.limit_mb:g}), checks {outcome.checks}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
