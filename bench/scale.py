"""The payhook scale-out benchmark: receivers and separate workers on one PostgreSQL.

    .venv/bin/python bench/scale.py                                  # every phase
    .venv/bin/python bench/scale.py --phases io --io-concurrency 16,32
    .venv/bin/python bench/scale.py --core-rev HEAD --repeat 3 --markdown bench/out/scale.md

Phases (each measurement on a fresh database, with fresh processes):
  e2e      events/s from the first receipt to the last handler commit, with 1, 2, 4 workers
  workers  the same workers alone on runs stored beforehand (runs/s)
  lag      receipt-to-commit lag at a steady rate (open loop), per worker count
  io       one worker on a handler that waits (sleep) before its write, per concurrency
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

import profiling
import servers
from layout import PLUGIN
from report import machine
from scale_phases import (
    EndToEnd,
    Lag,
    ScaleOptions,
    WorkerOnly,
    describe,
    end_to_end,
    steady_lag,
    worker_only,
)
from scale_report import markdown, to_json

BENCH = Path(__file__).resolve().parent
PHASES = ("e2e", "workers", "lag", "io")

Result = TypeVar("Result", EndToEnd, Lag, WorkerOnly)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(","))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated, from " + ", ".join(PHASES)
    )
    parser.add_argument("--workers", type=_ints, default=(1, 2, 4), help="worker counts (e2e, workers)")
    parser.add_argument("--receivers", type=int, default=1, help="`payhook serve --no-worker` processes")
    parser.add_argument("--events", type=int, default=6000, help="events per end-to-end measurement")
    parser.add_argument(
        "--warmup", type=int, default=300, help="uncounted events before each e2e measurement"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="e2e: closed-loop connections per receiver"
    )
    parser.add_argument(
        "--mix",
        choices=("ingest", "handled"),
        default="ingest",
        help="e2e and lag load: the ingest benchmark's mix (37%% handled) or only handled types",
    )
    parser.add_argument("--worker-runs", type=int, default=3000, help="workers: runs stored beforehand")
    parser.add_argument("--lag-rate", type=float, default=500.0, help="lag: events per second")
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="lag: how long to send")
    parser.add_argument(
        "--lag-workers", type=_ints, default=None, help="lag: worker counts (default --workers)"
    )
    parser.add_argument("--io-runs", type=int, default=4000, help="io: runs stored beforehand")
    parser.add_argument("--io-sleep-ms", type=float, default=50.0, help="io: what the handler waits")
    parser.add_argument("--io-concurrency", type=_ints, default=(16, 32), help="io: [processing] concurrency")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="io: an extra, unreported measurement per py-spy view at the highest concurrency",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="repetitions per measurement; the median is kept"
    )
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for sending")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for handlers")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to this for an idle machine")
    parser.add_argument("--quiet-cores", type=float, default=0.3, help="busy cores that count as idle")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=TOML",
        help="override a payhook setting for every process, e.g. --set processing.poll_interval=0.1",
    )
    parser.add_argument(
        "--core-rev", default=None, help="run core/ as committed at this revision (e.g. HEAD)"
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default bench/out/scale-<time>)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    return args


def repeated(
    count: int, measure: Callable[[Path], Result], folder: Path, key: Callable[[Result], float]
) -> Result:
    """Run `measure` `count` times (work folders folder-r1, -r2...); keep the median by `key`."""
    results = []
    for index in range(count):
        result = measure(folder.with_name(f"{folder.name}-r{index + 1}"))
        print(f"    {describe(result)}", flush=True)
        results.append(result)
    chosen = sorted(results, key=key)[(len(results) - 1) // 2]
    chosen.repeats = [key(result) for result in results]
    return chosen


def _postgres_version() -> str:
    import psycopg

    with psycopg.connect(servers.POSTGRES_ADMIN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0].split()[0] if row else '?'}"


def main() -> int:
    args = parse_args()
    if PLUGIN not in {entry_point.name for entry_point in entry_points(group="payhook")}:
        sys.exit("the bench plugin is not installed: .venv/bin/pip install -e bench/benchplugin")
    options = ScaleOptions(
        receivers=args.receivers,
        events=args.events,
        warmup=args.warmup,
        concurrency=args.concurrency,
        only_handled=args.mix == "handled",
        lag_rate=args.lag_rate,
        lag_seconds=args.lag_seconds,
        io_runs=args.io_runs,
        io_sleep_ms=args.io_sleep_ms,
        tenants=args.tenants,
        timeout=args.timeout,
        drain_timeout=args.drain_timeout,
        overrides=dict(item.split("=", 1) for item in args.set),
        quiet_wait=args.quiet_wait,
        quiet_cores=args.quiet_cores,
    )
    phases = set(args.phases.split(","))
    out = (args.out or BENCH / "out" / time.strftime("scale-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["postgres"] = _postgres_version()
    if args.core_rev:
        info.update(
            commit=servers.use_core_rev(args.core_rev, out), dirty=False, core="exported with git archive"
        )
    print(f"payhook scale bench at {info['commit']} on {info['nproc']} cores; work folder {out}", flush=True)

    def events_per_second(result: EndToEnd) -> float:
        return result.events_per_second

    def runs_per_second(result: WorkerOnly) -> float:
        return result.runs_per_second

    def lag_p99(result: Lag) -> float:
        return result.lags.ms(99)

    e2e_results: list[EndToEnd] = []
    alone: list[WorkerOnly] = []
    lags: list[Lag] = []
    io_bound: list[WorkerOnly] = []
    for workers in args.workers if "e2e" in phases else ():
        print(f"  e2e, {workers} workers", flush=True)
        measure = partial(end_to_end, workers, options)
        e2e_results.append(repeated(args.repeat, measure, out / f"e2e-w{workers}", events_per_second))
    for workers in args.workers if "workers" in phases else ():
        print(f"  workers alone, {workers} workers", flush=True)
        measure_alone = partial(worker_only, workers, None, 0.0, args.worker_runs, options)
        alone.append(repeated(args.repeat, measure_alone, out / f"workers-w{workers}", runs_per_second))
    for workers in (args.lag_workers or args.workers) if "lag" in phases else ():
        print(f"  lag at {options.lag_rate:g}/s, {workers} workers", flush=True)
        measure_lag = partial(steady_lag, workers, options)
        lags.append(repeated(args.repeat, measure_lag, out / f"lag-w{workers}", lag_p99))
    for concurrency in args.io_concurrency if "io" in phases else ():
        print(f"  io: handler waits {options.io_sleep_ms:g} ms, concurrency {concurrency}", flush=True)
        measure_io = partial(worker_only, 1, concurrency, options.io_sleep_ms, options.io_runs, options)
        io_bound.append(repeated(args.repeat, measure_io, out / f"io-c{concurrency}", runs_per_second))

    if "io" in phases and args.profile:
        concurrency = max(args.io_concurrency)
        for view in profiling.VIEWS:
            print(f"  io profile ({view} view), concurrency {concurrency}", flush=True)
            profiled = worker_only(
                1,
                concurrency,
                options.io_sleep_ms,
                options.io_runs,
                options,
                out / f"io-profile-{view}",
                view,
            )
            (out / f"profile-io-c{concurrency}-{view}.txt").write_text(profiled.profile)
            print(profiled.profile, flush=True)

    text = markdown(info, options, e2e_results, alone, lags, io_bound, args.repeat)
    print("\n" + text)
    results: dict[str, Sequence[EndToEnd | Lag | WorkerOnly]] = {
        "e2e": e2e_results,
        "workers": alone,
        "lag": lags,
        "io": io_bound,
    }
    (out / "results.json").write_text(
        json.dumps(to_json(info, options, results), indent=2, default=str) + "\n"
    )
    if args.markdown:
        args.markdown.write_text(text + "\n")
    failed = [r for group in results.values() for r in group if not r.checks.get("ok")]
    for result in failed:
        print(
            f"FAILED check: {type(result).__name__} workers={result.workers}: {result.checks}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
