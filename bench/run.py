"""The payhook ingest benchmark: one entry point for every backend and scenario.

    .venv/bin/python bench/run.py --backend sqlite --scenario all
    .venv/bin/python bench/run.py --backend all --scenario all --markdown bench/out/results.md

Scenarios: (a) no plugin, (b) the bench plugin with the worker inside `payhook serve`,
(c) the bench plugin with `payhook serve --no-worker` plus `payhook worker`. Each runs
against a fresh database, on 127.0.0.1 only, with a fixed number of requests per level.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import servers
from loadgen import Level, build_requests, median_level
from report import machine, markdown, to_json
from scenario import PLUGIN, SCENARIOS, Options, Outcome, make_tenants, run_scenario, run_side_by_side, send

BENCH = Path(__file__).resolve().parent
BACKENDS = ("sqlite", "postgres")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="sqlite")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency level")
    parser.add_argument("--repeat", type=int, default=1, help="runs per level; the median is reported")
    parser.add_argument("--warmup", type=int, default=300, help="unreported requests before the levels")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for one level")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for handlers")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each level, wait up to this many seconds for the machine to be idle (0: don't)",
    )
    parser.add_argument(
        "--quiet-cores", type=float, default=0.3, help="busy cores below which the machine counts as idle"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare Starlette baseline")
    parser.add_argument(
        "--http",
        default=None,
        help="comma-separated `payhook serve --http` parsers to measure side by side, each with its "
        "own baseline, e.g. h11,httptools (default: serve's default only)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy an extra c=8 level per scenario")
    parser.add_argument("--profile-requests", type=int, default=10000, help="requests per profiled level")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=TOML",
        help="override a payhook setting, e.g. --set processing.concurrency=1 (repeatable)",
    )
    parser.add_argument(
        "--serve-workers",
        type=int,
        default=1,
        help="`payhook serve --workers N` (receiver processes on one port; their CPU is summed)",
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default bench/out/<time>)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    parser.add_argument(
        "--core-rev",
        default=None,
        help="serve the core as committed at this git revision (e.g. HEAD), not the working tree",
    )
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="REV_OR_CHECKOUT",
        help="also run every scenario on this other core, side by side: a git revision, or a "
        "checkout of one (e.g. a `git worktree` in /tmp); repeatable",
    )
    return parser.parse_args()


def run_baseline(options: Options, workdir: Path, http: str | None = None) -> list[Level]:
    """The bare Starlette app under the same client, at the same concurrency levels."""
    workdir.mkdir(parents=True, exist_ok=True)
    tenants = make_tenants(options.tenants)
    config = servers.write_config(workdir / "baseline.toml", "sqlite:///unused.db", tenants, (), worker=False)
    port = servers.free_port()
    process = servers.start_baseline(config, port, workdir, http)
    try:
        warmup = build_requests(options.warmup, tenants, (), servers.HOST, port)
        send(port, warmup, 8, [process], options)
        levels = []
        for concurrency in options.concurrency:
            repeats = []
            for _ in range(options.repeat):
                requests = build_requests(options.requests, tenants, (), servers.HOST, port)
                repeats.append(send(port, requests, concurrency, [process], options))
            levels.append(median_level(repeats))
            label = "baseline" + (f" {http}" if http else "")
            print(f"  {label} c={concurrency}: {levels[-1].rate:7.0f} ev/s", flush=True)
        return levels
    finally:
        process.stop()


def main() -> int:
    args = parse_args()
    servers.SERVE_WORKERS = args.serve_workers
    options = Options(
        requests=args.requests,
        repeat=args.repeat,
        warmup=args.warmup,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        tenants=args.tenants,
        timeout=args.timeout,
        drain_timeout=args.drain_timeout,
        profile=args.profile,
        profile_requests=args.profile_requests,
        overrides=dict(item.split("=", 1) for item in args.set),
        quiet_wait=args.quiet_wait,
        quiet_cores=args.quiet_cores,
    )
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    scenarios = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    if any(s.plugins for s in scenarios) and PLUGIN not in {e.name for e in entry_points(group="payhook")}:
        sys.exit("the bench plugin is not installed: .venv/bin/pip install -e bench/benchplugin")
    out = (args.out or BENCH / "out" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    info = machine()
    info["overrides"] = options.overrides
    info["serve_workers"] = args.serve_workers
    if args.core_rev:
        info.update(
            commit=servers.use_core_rev(args.core_rev, out), dirty=False, core="exported with git archive"
        )
    print(f"payhook bench at {info['commit']} on {info['nproc']} cores ({info['cpu']}); work folder {out}")

    parsers: list[str | None] = list(args.http.split(",")) if args.http else [None]
    info["http"] = parsers
    baseline: dict[str | None, list[Level]] = {}
    for http in parsers if not args.no_baseline else []:
        baseline[http] = run_baseline(options, out / ("baseline" + (f"-{http}" if http else "")), http)
    cores: list[servers.Core | None] = [None, *(servers.core_from(spec, out) for spec in args.versus)]
    info["versus"] = [core.label for core in cores if core is not None]
    outcomes: list[Outcome] = []
    variants = [(http, core) for http in parsers for core in cores]
    for backend, scenario in ((b, s) for b in backends for s in scenarios):
        names = [
            f"{http or 'default parser'} on {core.label if core else info['commit']}"
            for http, core in variants
        ]
        print(
            f"{backend} ({scenario.key}) {scenario.title}"
            + (f": {'; '.join(names)}" if len(variants) > 1 else "")
        )
        workdirs = [
            out
            / (
                f"{backend}-{scenario.key}"
                + (f"-{http}" if http else "")
                + (f"-{core.label}" if core else "")
            )
            for http, core in variants
        ]
        if len(variants) == 1:
            outcomes.append(run_scenario(backend, scenario, options, workdirs[0], *variants[0]))
        else:
            # Every variant's server runs at once and they take turns at each level, so the
            # machine's other load falls on all of them alike.
            outcomes += run_side_by_side(backend, scenario, options, workdirs, variants)

    text = markdown(info, options.requests, options.repeat, baseline, outcomes)
    print("\n" + text)
    (out / "results.json").write_text(json.dumps(to_json(info, baseline, outcomes), indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    for outcome in outcomes:
        name = f"{outcome.backend}-{outcome.scenario.key}" + (f"-{outcome.http}" if outcome.http else "")
        name += f"-{outcome.core}" if outcome.core else ""
        if outcome.profile:
            (out / f"profile-{name}.txt").write_text(outcome.profile)
            print(f"\nprofile {name} (extra c=8 level):\n{outcome.profile}")
    failed = [o for o in outcomes if not o.checks.get("exactly_once") or any(lv.errors for lv in o.levels)]
    for outcome in failed:
        label = f"{outcome.backend}/{outcome.scenario.key} {outcome.http or ''} {outcome.core or ''}"
        print(f"FAILED check: {label}: {outcome.checks}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
