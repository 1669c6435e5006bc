"""The machine a run happened on, and the Markdown tables of its results."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loadgen import Level
from scenario import Outcome

__all__ = ["machine", "markdown", "to_json"]

MACHINE_KIND = "python-svc"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": MACHINE_KIND,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "loadavg_before": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {
            name: version(name)
            for name in ("uvicorn", "uvloop", "httptools", "h11", "starlette", "SQLAlchemy")
        },
    }


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _rate(level: Level) -> str:
    rates = level.extra.get("rates", [])
    if len(rates) < 2:
        return f"{level.rate:,.0f}"
    return f"{level.rate:,.0f} ({min(rates):,} to {max(rates):,})"


def _row(level: Level, baseline: Level | None, with_drain: bool) -> str:
    cells = [
        str(level.concurrency),
        _rate(level),
        _ms(level.percentile_ms(50)),
        _ms(level.percentile_ms(95)),
        _ms(level.percentile_ms(99)),
        _ms(level.percentile_ms(100)),
        str(level.errors),
        "+".join(f"{core:.2f}" for core in level.extra.get("cores", [])) or "-",
        f"{level.client_cpu / level.seconds:.2f}" if level.seconds else "-",
        f"{level.extra.get('db_cores', 0):.2f}",
        f"{level.extra.get('other_cores', 0):.2f}",
    ]
    cells.append(f"{level.extra['batch']:.1f}" if level.extra.get("batch") else "-")
    if with_drain:
        drain = level.extra.get("drain_seconds")
        rate = level.extra.get("runs_per_second")
        cells += ["timeout" if drain is None else f"{drain:.2f}", f"{rate:,.0f}" if rate else "-"]
    cells.append(f"{level.rate / baseline.rate:.2f}" if baseline and baseline.rate else "-")
    return "| " + " | ".join(cells) + " |"


def _table(levels: list[Level], baselines: dict[int, Level], with_drain: bool) -> list[str]:
    head = [
        "c",
        "events/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "non-200",
        "server cores",
        "client cores",
        "db cores",
        "other cores",
        "ingest batch",
    ]
    if with_drain:
        head += ["handler drain s", "runs/s"]
    head.append("vs baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    lines += [_row(level, baselines.get(level.concurrency), with_drain) for level in levels]
    return lines


def _parser(http: str | None) -> str:
    return f"--http {http}" if http else "serve's default parser"


def _comparison(baseline: Mapping[str | None, list[Level]], outcomes: list[Outcome]) -> list[str]:
    """Each parser's events/s and p99 against the first one's, level by level."""
    parsers = list(dict.fromkeys([*baseline, *(outcome.http for outcome in outcomes)]))
    first, others = parsers[0], parsers[1:]
    head = ["run", "c", f"{first} events/s"]
    for other in others:
        head += [f"{other} events/s", f"{first} / {other}"]
    head += [f"{parser} p99 ms" for parser in parsers]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    runs: dict[str, dict[str | None, list[Level]]] = {}
    for http, levels in baseline.items():
        runs.setdefault("baseline", {})[http] = levels
    for outcome in outcomes:
        runs.setdefault(f"{outcome.backend} ({outcome.scenario.key})", {})[outcome.http] = outcome.levels
    for run, by_parser in runs.items():
        if set(by_parser) != set(parsers):
            continue
        by_level = {http: {lv.concurrency: lv for lv in levels} for http, levels in by_parser.items()}
        for concurrency in by_level[first]:
            ours = by_level[first][concurrency]
            cells = [run, str(concurrency), f"{ours.rate:,.0f}"]
            for other in others:
                theirs = by_level[other].get(concurrency)
                rate = theirs.rate if theirs else 0.0
                cells += [f"{rate:,.0f}", f"{ours.rate / rate:.2f}" if rate else "-"]
            for http in parsers:
                level = by_level[http].get(concurrency)
                cells.append(_ms(level.percentile_ms(99)) if level else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cores_comparison(info: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    """The core under test against each --versus core: ratios first, then rates and p99s."""
    ours = info["commit"] + (" (dirty)" if info.get("dirty") else "")
    others = list(info.get("versus", []))
    head = ["run", "c"]
    head += [f"{ours} / {other}" for other in others]
    head += [f"{ours} events/s", *(f"{other} events/s" for other in others)]
    head += [f"{ours} p99 ms", *(f"{other} p99 ms" for other in others)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    runs: dict[str, dict[str | None, list[Level]]] = {}
    for outcome in outcomes:
        run = f"{outcome.backend} ({outcome.scenario.key})" + (f" {outcome.http}" if outcome.http else "")
        runs.setdefault(run, {})[outcome.core] = outcome.levels
    for run, by_core in runs.items():
        if set(by_core) != {None, *others}:
            continue
        by_level = {core: {lv.concurrency: lv for lv in levels} for core, levels in by_core.items()}
        for concurrency, level in by_level[None].items():
            theirs = [by_level[other].get(concurrency) for other in others]
            cells = [run, str(concurrency)]
            cells += [f"**{level.rate / t.rate:.2f}**" if t and t.rate else "-" for t in theirs]
            cells += [_rate(level), *(_rate(t) if t else "-" for t in theirs)]
            cells += [_ms(level.percentile_ms(99)), *(_ms(t.percentile_ms(99)) if t else "-" for t in theirs)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


QUIET = 0.3  # cores the rest of the machine may use during a repetition counted as quiet


def _quiet_repetitions(info: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    """Each variant's median over the repetitions run while the rest of the machine was quiet."""
    head = ["run", "c", "core", "quiet repetitions", "their median events/s", "all repetitions"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|---|"]
    for outcome in outcomes:
        run = f"{outcome.backend} ({outcome.scenario.key})" + (f" {outcome.http}" if outcome.http else "")
        for level in outcome.levels:
            repeats = level.extra.get("repeats", [])
            quiet = [r["rate"] for r in repeats if r["other_cores"] is not None and r["other_cores"] < QUIET]
            every = ", ".join(f"{r['rate']:,} ({r['other_cores']:.2f})" for r in repeats)
            median = f"{sorted(quiet)[(len(quiet) - 1) // 2]:,}" if quiet else "-"
            core = outcome.core or info["commit"]
            lines.append(f"| {run} | {level.concurrency} | {core} | {len(quiet)} | {median} | {every} |")
    return lines


def markdown(
    info: dict[str, Any],
    requests: int,
    repeat: int,
    baseline: Mapping[str | None, list[Level]],
    outcomes: list[Outcome],
) -> str:
    """The results of one `run.py` invocation as Markdown."""
    bases = {http: {level.concurrency: level for level in levels} for http, levels in baseline.items()}
    lines = [
        f"### Run of {info['date']} at commit `{info['commit']}`" + (" (dirty)" if info["dirty"] else ""),
        "",
        f"Machine `{info['machine']}`: nproc {info['nproc']}, {info['cpu']}, load average before "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_before'])}; Python {info['python']}; "
        + ", ".join(f"{name} {v}" for name, v in info["versions"].items())
        + f". {requests} requests per concurrency level"
        + (f", median of {repeat} runs (range in brackets)." if repeat > 1 else "."),
        "",
    ]
    if info.get("overrides"):
        settings = ", ".join(f"`{key} = {value}`" for key, value in info["overrides"].items())
        lines += [f"Settings changed from payhook's defaults: {settings}.", ""]
    for http, levels in baseline.items():
        title = "#### Baseline: bare Starlette app, signature check only"
        lines += [title + (f", {_parser(http)}" if http else ""), ""]
        lines += _table(levels, {}, with_drain=False)
        lines += [""]
    if info.get("versus"):
        lines += [f"#### Cores side by side: `{info['commit']}` against `{'`, `'.join(info['versus'])}`", ""]
        lines += _cores_comparison(info, outcomes)
        lines += ["", f"#### Repetitions while the rest of the machine used under {QUIET} cores", ""]
        lines += [
            "Each repetition's events/s, with the other cores during it in brackets, in the order they ran.",
            "",
        ]
        lines += _quiet_repetitions(info, outcomes)
        lines += [""]
    for outcome in outcomes:
        stack = ", ".join(f"{name} {'yes' if used else 'NO'}" for name, used in outcome.stack.items())
        title = f"#### {outcome.backend} / ({outcome.scenario.key}) {outcome.scenario.title}"
        title += f", core `{outcome.core or info['commit']}`" if info.get("versus") else ""
        lines += [title + (f", {_parser(outcome.http)}" if outcome.http else ""), ""]
        base = bases.get(outcome.http, {})
        lines += _table(outcome.levels, base, with_drain=bool(outcome.scenario.plugins))
        checks = outcome.checks
        verdict = "yes" if checks.get("exactly_once") else "**NO**"
        lines += [
            "",
            f"Stored exactly once: {verdict} ({checks.get('stored')} rows for {checks.get('sent')} events "
            f"sent incl. warm-up; missing {checks.get('missing')}, duplicated {checks.get('duplicated')}). "
            f"Handler runs: {checks.get('run_statuses')}"
            + (f"; bench_hit rows {checks['bench_hits']}" if "bench_hits" in checks else "")
            + f". Server loaded: {stack}.",
            "",
        ]
    if len({*baseline, *(outcome.http for outcome in outcomes)}) > 1:
        lines += ["#### Parsers side by side", ""]
        lines += _comparison(baseline, [outcome for outcome in outcomes if outcome.core is None])
        lines += [""]
    return "\n".join(lines)


def to_json(
    info: dict[str, Any], baseline: Mapping[str | None, list[Level]], outcomes: list[Outcome]
) -> dict[str, Any]:
    def level(item: Level) -> dict[str, Any]:
        return {
            "concurrency": item.concurrency,
            "requests": item.requests,
            "seconds": item.seconds,
            "events_per_second": item.rate,
            "p50_ms": item.percentile_ms(50),
            "p95_ms": item.percentile_ms(95),
            "p99_ms": item.percentile_ms(99),
            "max_ms": item.percentile_ms(100),
            "http_statuses": dict(item.http_statuses),
            "answers": dict(item.answers),
            "client_cpu_seconds": item.client_cpu,
            **item.extra,
        }

    return {
        "machine": info,
        "baseline": {str(http): [level(item) for item in levels] for http, levels in baseline.items()},
        "outcomes": [
            {
                "backend": outcome.backend,
                "scenario": outcome.scenario.key,
                "http": outcome.http,
                "core": outcome.core or info["commit"],
                "title": outcome.scenario.title,
                "levels": [level(item) for item in outcome.levels],
                "checks": outcome.checks,
                "stack": outcome.stack,
            }
            for outcome in outcomes
        ],
    }
