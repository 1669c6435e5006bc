"""Markdown and JSON for a scale.py run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from scale_phases import EndToEnd, Lag, ScaleOptions, WorkerOnly

__all__ = ["markdown", "to_json"]

CORE_COLUMNS = ("receivers", "workers", "db", "client", "other")


def _cores(result: EndToEnd | Lag | WorkerOnly) -> list[str]:
    return [f"{result.cores.get(name, 0.0):.2f}" for name in CORE_COLUMNS]


def _check(result: EndToEnd | Lag | WorkerOnly) -> str:
    return "ok" if result.checks.get("ok") else "**FAILED**"


def _spread(value: float, repeats: Sequence[float], digits: int = 0) -> str:
    text = f"{value:,.{digits}f}"
    if len(repeats) > 1:
        text += f" ({min(repeats):,.{digits}f} to {max(repeats):,.{digits}f})"
    return text


def _ratio(value: float, first: float) -> str:
    return f"{value / first:.2f}" if first else "-"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _end_to_end(results: Sequence[EndToEnd]) -> list[str]:
    first = results[0].events_per_second if results else 0.0
    rows = [
        [
            str(r.workers),
            f"{r.events:,}",
            f"{r.runs:,}",
            f"{r.seconds:.2f}",
            _spread(r.events_per_second, r.repeats),
            f"{r.runs_per_second:,.0f}",
            _ratio(r.events_per_second, first),
            f"{r.ingest_rate:,.0f}",
            *_cores(r),
            _check(r),
        ]
        for r in results
    ]
    head = ["workers", "events", "runs", "receipt → commit s", "events/s", "runs/s", "vs 1st row"]
    head += ["answered ev/s", *(f"{name} cores" for name in CORE_COLUMNS), "checks"]
    return _table(head, rows)


def _workers_alone(results: Sequence[WorkerOnly]) -> list[str]:
    first = results[0].runs_per_second if results else 0.0
    rows = []
    for r in results:
        # With a sleeping handler each run slot can do at most 1/sleep runs per second.
        ceiling = f"{r.workers * r.concurrency / (r.sleep_ms / 1000):,.0f}" if r.sleep_ms else "-"
        rows.append(
            [
                str(r.workers),
                str(r.concurrency),
                f"{r.sleep_ms:g}",
                f"{r.runs:,}",
                f"{r.seconds:.2f}",
                _spread(r.runs_per_second, r.repeats),
                _ratio(r.runs_per_second, first),
                ceiling,
                *_cores(r),
                _check(r),
            ]
        )
    head = ["workers", "concurrency", "handler wait ms", "runs", "claim → commit s", "runs/s", "vs 1st row"]
    head += ["ceiling runs/s", *(f"{name} cores" for name in CORE_COLUMNS), "checks"]
    return _table(head, rows)


def _lag(results: Sequence[Lag]) -> list[str]:
    rows = []
    for r in results:
        paced, lags = r.paced, r.lags
        rows.append(
            [
                str(r.workers),
                f"{paced.requests:,}",
                f"{paced.achieved_rate:,.0f}",
                f"{paced.late} (max {max(paced.lateness, default=0) * 1000:.0f} ms)",
                f"{r.runs:,}",
                f"{lags.ms(50):,.1f}",
                _spread(lags.ms(99), r.repeats, 1),
                f"{lags.ms(100):,.1f}",
                f"{lags.first_quarter_median * 1000:,.1f} / {lags.last_quarter_median * 1000:,.1f}",
                f"{_nearest_ms(paced.latencies_ns, 99):.1f}",
                *_cores(r),
                _check(r),
            ]
        )
    head = ["workers", "events", "sent/s", "late sends", "runs", "lag p50 ms", "lag p99 ms", "lag max ms"]
    head += ["p50 1st / last quarter ms", "HTTP p99 ms", *(f"{name} cores" for name in CORE_COLUMNS)]
    head.append("checks")
    return _table(head, rows)


def _nearest_ms(latencies_ns: list[int], q: float) -> float:
    from e2e import nearest_rank

    return nearest_rank(sorted(latency / 1e6 for latency in latencies_ns), q)


def markdown(
    info: dict[str, Any],
    options: ScaleOptions,
    end_to_end: Sequence[EndToEnd],
    workers_alone: Sequence[WorkerOnly],
    lag: Sequence[Lag],
    io_bound: Sequence[WorkerOnly],
    repeat: int,
) -> str:
    mix = "every event of a handled type (one run each)" if options.only_handled else "the ingest mix"
    lines = [
        f"### Scale-out run of {info['date']} at commit `{info['commit']}`"
        + (" (dirty)" if info["dirty"] else ""),
        "",
        f"Machine `{info['machine']}`: nproc {info['nproc']}, {info['cpu']}, load average before "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_before'])}; Python {info['python']}; "
        f"{info.get('postgres', 'PostgreSQL')}. Layout: {options.receivers} `payhook serve --no-worker` "
        "and N `payhook worker` on one fresh PostgreSQL database per measurement; "
        f"{options.tenants} tenants, all enabling the bench plugin; load: {mix}"
        + (f"; median of {repeat} repetitions (range in brackets)." if repeat > 1 else "."),
        "",
    ]
    if options.overrides:
        settings = ", ".join(f"`{key} = {value}`" for key, value in options.overrides.items())
        lines += [f"Settings changed from payhook's defaults: {settings}.", ""]
    if end_to_end:
        lines += [
            f"#### End to end: {options.events:,} events, closed loop at c={options.concurrency} per "
            "receiver, workers already running",
            "",
            *_end_to_end(end_to_end),
        ]
    if workers_alone:
        lines += ["#### Workers alone: runs stored first, then the workers released on them", ""]
        lines += _workers_alone(workers_alone)
    if lag:
        lines += [
            f"#### Lag at a steady {options.lag_rate:,.0f} events/s for {options.lag_seconds:g} s "
            "(open loop)",
            "",
            *_lag(lag),
        ]
    if io_bound:
        lines += [f"#### Handler that waits {options.io_sleep_ms:g} ms, one worker, runs stored first", ""]
        lines += _workers_alone(io_bound)
    return "\n".join(lines)


def _plain(result: EndToEnd | Lag | WorkerOnly) -> dict[str, Any]:
    common = {
        "workers": result.workers,
        "cores": result.cores,
        "checks": result.checks,
        "repeats": result.repeats,
    }
    if isinstance(result, EndToEnd):
        return {
            **common,
            "events": result.events,
            "runs": result.runs,
            "seconds": result.seconds,
            "send_seconds": result.send_seconds,
            "events_per_second": result.events_per_second,
            "runs_per_second": result.runs_per_second,
            "http_errors": result.http_errors,
        }
    if isinstance(result, Lag):
        paced, lags = result.paced, result.lags
        return {
            **common,
            "events": paced.requests,
            "target_rate": paced.rate,
            "achieved_rate": paced.achieved_rate,
            "late_sends": paced.late,
            "max_lateness_s": max(paced.lateness, default=0.0),
            "http_statuses": dict(paced.http_statuses),
            "http_p99_ms": _nearest_ms(paced.latencies_ns, 99),
            "runs": result.runs,
            "lag_ms": {str(q): lags.ms(q) for q in (50, 90, 99, 100)},
            "lag_quarter_medians_ms": [lags.first_quarter_median * 1000, lags.last_quarter_median * 1000],
        }
    return {
        **common,
        "concurrency": result.concurrency,
        "sleep_ms": result.sleep_ms,
        "runs": result.runs,
        "seconds": result.seconds,
        "runs_per_second": result.runs_per_second,
    }


def to_json(
    info: dict[str, Any],
    options: ScaleOptions,
    phases: Mapping[str, Sequence[EndToEnd | Lag | WorkerOnly]],
) -> dict[str, Any]:
    return {
        "machine": info,
        "options": asdict(options),
        **{name: [_plain(result) for result in results] for name, results in phases.items()},
    }
