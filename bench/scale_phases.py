"""The scale-out measurements, each on its own fresh database and processes.

* `end_to_end`: N workers running, a fixed number of events sent as fast as the receivers
  answer (closed loop); events/s from the first receipt to the last handler commit.
* `steady_lag`: N workers running, events arriving at a fixed rate (open loop); the
  receipt-to-commit lag of every run.
* `worker_only`: runs stored first, then N workers started and released at once; runs/s
  from the first claim to the last commit, optionally with a handler that sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cpuacct
import dbcheck
import e2e
import profiling
from layout import Layout, layout
from loadgen import Prepared, build_requests, new_loop, run_level
from pacing import Paced, run_paced
from payhook_bench import HANDLED_TYPES, SLEEP_ENV
from scenario import make_tenants
from servers import HOST

__all__ = ["EndToEnd", "Lag", "ScaleOptions", "WorkerOnly", "end_to_end", "steady_lag", "worker_only"]


@dataclass(frozen=True)
class ScaleOptions:
    receivers: int = 1
    events: int = 6000  # per end-to-end measurement
    warmup: int = 300  # events before an end-to-end measurement, not counted
    concurrency: int = 8  # closed-loop connections per receiver
    only_handled: bool = False  # every event of a handled type (one run each), or the ingest mix
    lag_rate: float = 500.0
    lag_seconds: float = 20.0
    paced_connections: int = 32  # per receiver
    io_runs: int = 4000
    io_sleep_ms: float = 50.0
    tenants: int = 4
    timeout: float = 300.0
    drain_timeout: float = 300.0
    overrides: dict[str, str] = field(default_factory=dict)
    quiet_wait: float = 30.0
    quiet_cores: float = 0.3


@dataclass
class EndToEnd:
    workers: int
    events: int
    runs: int
    seconds: float  # first receipt to last handler commit
    send_seconds: float  # first request to last answer
    http_errors: int
    cores: dict[str, float]
    checks: dict[str, Any]
    repeats: list[float] = field(default_factory=list)  # the headline figure of every repetition

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0

    @property
    def ingest_rate(self) -> float:
        return self.events / self.send_seconds if self.send_seconds else 0.0


@dataclass
class Lag:
    workers: int
    paced: Paced
    runs: int
    lags: e2e.Lags
    cores: dict[str, float]
    checks: dict[str, Any]
    repeats: list[float] = field(default_factory=list)


@dataclass
class WorkerOnly:
    workers: int
    concurrency: int
    sleep_ms: float
    runs: int
    seconds: float  # first claim to last handler commit
    cores: dict[str, float]
    checks: dict[str, Any]
    repeats: list[float] = field(default_factory=list)
    profile: str = ""  # py-spy summary, when profiled

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0


def _runs(requests: Sequence[Prepared]) -> int:
    return sum(request.handled for request in requests)


def _build(lay: Layout, count: int, only_handled: bool) -> list[Prepared]:
    # The Host header names the first receiver; uvicorn does not care which.
    return build_requests(count, lay.tenants, HANDLED_TYPES, HOST, lay.ports[0], only_handled)


def _send_closed(lay: Layout, requests: list[Prepared], options: ScaleOptions) -> tuple[float, int]:
    """Round-robin over the receivers, `concurrency` connections each; (seconds, non-200s)."""
    ports = lay.ports
    parts = [requests[index :: len(ports)] for index in range(len(ports))]

    async def together() -> list[Any]:
        return await asyncio.gather(
            *(
                run_level(part, options.concurrency, HOST, port, options.timeout)
                for part, port in zip(parts, ports, strict=True)
            )
        )

    with asyncio.Runner(loop_factory=new_loop) as runner:
        levels = runner.run(together())
    seconds = max(level.finished for level in levels) - min(level.started for level in levels)
    return seconds, sum(level.errors for level in levels)


def _send_paced(lay: Layout, requests: list[Prepared], options: ScaleOptions) -> Paced:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(
            run_paced(requests, options.lag_rate, HOST, lay.ports, options.timeout, options.paced_connections)
        )


def _quiet(options: ScaleOptions) -> None:
    if options.quiet_wait:
        cpuacct.wait_quiet(options.quiet_cores, options.quiet_wait)


def _meter(lay: Layout) -> cpuacct.Meter:
    return cpuacct.Meter(
        {"receivers": [p.pid for p in lay.receivers], "workers": [p.pid for p in lay.workers]}
    )


def _drain(lay: Layout, expected: int, options: ScaleOptions) -> None:
    """Until `expected` runs succeeded; a timeout is left for the checks to report."""
    dbcheck.wait_drained(lay.engine, expected, time.monotonic(), options.drain_timeout)


def _checks(lay: Layout, sent: Sequence[Prepared], http_errors: int) -> dict[str, Any]:
    """Every event stored once, every run succeeded, one bench_hit row per run."""
    lay.check_alive()
    stored = dbcheck.check_stored(lay.engine, ((request.tenant, request.event_id) for request in sent))
    statuses = dbcheck.run_statuses(lay.engine)
    effects = e2e.effects_check(lay.engine)
    runs = _runs(sent)
    ok = (
        stored.ok
        and http_errors == 0
        and statuses == ({"succeeded": runs} if runs else {})
        and effects["runs"] == effects["hits"] == effects["matched"] == runs
    )
    return {
        "ok": ok,
        "events_sent": stored.sent,
        "stored_exactly_once": stored.ok,
        "runs_expected": runs,
        "run_statuses": statuses,
        **effects,
    }


def end_to_end(workers: int, options: ScaleOptions, workdir: Path) -> EndToEnd:
    with layout(workdir, make_tenants(options.tenants), options.receivers, options.overrides) as lay:
        lay.start_workers(workers)
        warmup = _build(lay, options.warmup, options.only_handled)
        _, errors = _send_closed(lay, warmup, options)
        _drain(lay, _runs(warmup), options)
        after = dbcheck.last_event_id(lay.engine)

        requests = _build(lay, options.events, options.only_handled)  # untimed
        _quiet(options)
        meter = _meter(lay)
        send_seconds, measured_errors = _send_closed(lay, requests, options)
        _drain(lay, _runs(warmup) + _runs(requests), options)
        cores = meter.cores()
        window = e2e.window(lay.engine, after)
        return EndToEnd(
            workers=workers,
            events=len(requests),
            runs=window.runs,
            seconds=window.seconds,
            send_seconds=send_seconds,
            http_errors=measured_errors,
            cores=cores,
            checks=_checks(lay, [*warmup, *requests], errors + measured_errors),
        )


def steady_lag(workers: int, options: ScaleOptions, workdir: Path) -> Lag:
    with layout(workdir, make_tenants(options.tenants), options.receivers, options.overrides) as lay:
        lay.start_workers(workers)
        # One second at the rate first: connections, pools and caches, not counted.
        warmup = _build(lay, round(options.lag_rate), options.only_handled)
        warm = _send_paced(lay, warmup, options)
        _drain(lay, _runs(warmup), options)
        after = dbcheck.last_event_id(lay.engine)

        requests = _build(lay, round(options.lag_rate * options.lag_seconds), options.only_handled)
        _quiet(options)
        meter = _meter(lay)
        paced = _send_paced(lay, requests, options)
        _drain(lay, _runs(warmup) + _runs(requests), options)
        cores = meter.cores()
        lags = e2e.lags(lay.engine, after)
        return Lag(
            workers=workers,
            paced=paced,
            runs=len(lags.seconds),
            lags=lags,
            cores=cores,
            checks=_checks(lay, [*warmup, *requests], warm.errors + paced.errors),
        )


def worker_only(
    workers: int,
    concurrency: int | None,
    sleep_ms: float,
    runs: int,
    options: ScaleOptions,
    workdir: Path,
    profile_view: str | None = None,
) -> WorkerOnly:
    """`runs` runs stored with no worker running, then `workers` workers released on them.

    With `profile_view` ("threads" or "gil"), py-spy samples the workers meanwhile; the
    summary lands in `.profile` (the sampler costs the workers CPU: do not report the rate).
    """
    overrides = dict(options.overrides)
    if concurrency is not None:
        overrides["processing.concurrency"] = str(concurrency)
    with layout(workdir, make_tenants(options.tenants), options.receivers, overrides) as lay:
        requests = _build(lay, runs, only_handled=True)
        _, errors = _send_closed(lay, requests, options)
        held = lay.hold_runs()
        if held != runs:
            raise RuntimeError(f"expected {runs} pending runs after the preload, found {held}")
        lay.start_workers(workers, {SLEEP_ENV: f"{sleep_ms:g}"})
        _quiet(options)
        meter = _meter(lay)

        def release_and_drain() -> None:
            lay.release_runs()
            _drain(lay, runs, options)

        profile = ""
        if profile_view is None:
            release_and_drain()
        else:
            targets = {f"worker-{index + 1}": process.pid for index, process in enumerate(lay.workers)}
            profile = profiling.record(targets, workdir, profile_view, release_and_drain)
        cores = meter.cores()
        window = e2e.window(lay.engine, start="claimed")
        return WorkerOnly(
            workers=workers,
            concurrency=concurrency or _configured_concurrency(lay),
            sleep_ms=sleep_ms,
            runs=window.runs,
            seconds=window.seconds,
            cores=cores,
            checks=_checks(lay, requests, errors),
            profile=profile,
        )


def _configured_concurrency(lay: Layout) -> int:
    from payhook.config import load_config

    return load_config(lay.config).processing.concurrency


def describe(result: EndToEnd | Lag | WorkerOnly) -> str:
    """One progress line."""
    cores = " ".join(f"{name} {value:.2f}" for name, value in result.cores.items())
    verdict = "ok" if result.checks.get("ok") else f"CHECK FAILED {result.checks}"
    if isinstance(result, EndToEnd):
        head = (
            f"{result.events_per_second:7.0f} events/s {result.runs_per_second:5.0f} runs/s "
            f"({result.events} events, {result.runs} runs in {result.seconds:.2f}s; "
            f"answered in {result.send_seconds:.2f}s)"
        )
    elif isinstance(result, Lag):
        lags = result.lags
        head = (
            f"lag p50 {lags.ms(50):7.1f} p99 {lags.ms(99):7.1f} max {lags.ms(100):7.1f} ms "
            f"({result.runs} runs; sent {result.paced.achieved_rate:.0f}/s, {result.paced.late} late)"
        )
    else:
        head = f"{result.runs_per_second:7.0f} runs/s ({result.runs} runs in {result.seconds:.2f}s)"
    return f"{head}  cores: {cores}  {verdict}"


def statuses_summary(results: Sequence[EndToEnd | Lag | WorkerOnly]) -> Counter[str]:
    """Run statuses over several results (for the report's correctness line)."""
    total: Counter[str] = Counter()
    for result in results:
        total.update(result.checks.get("run_statuses", {}))
    return total
