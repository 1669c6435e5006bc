"""One scenario on one backend: start payhook, load it at each concurrency, check the store."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cpuacct
import dbcheck
import profiling
import servers
from loadgen import Level, Prepared, Tenant, build_requests, median_level, new_loop, run_level

__all__ = [
    "SCENARIOS",
    "Options",
    "Outcome",
    "Running",
    "Scenario",
    "make_tenants",
    "run_scenario",
    "run_side_by_side",
    "running",
    "send",
]

PLUGIN = "bench"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    plugins: tuple[str, ...]
    worker: Literal["in-process", "separate"]


SCENARIOS = {
    "a": Scenario("a", "no plugin (in-process worker, idle)", (), "in-process"),
    "b": Scenario("b", "bench plugin, worker in the serve process", (PLUGIN,), "in-process"),
    "c": Scenario("c", "bench plugin, worker in its own process (serve --no-worker)", (PLUGIN,), "separate"),
}


@dataclass(frozen=True)
class Options:
    requests: int
    repeat: int
    warmup: int
    concurrency: tuple[int, ...]
    tenants: int
    timeout: float
    drain_timeout: float
    profile: bool
    profile_requests: int
    overrides: dict[str, str]
    quiet_wait: float = 0.0
    quiet_cores: float = 0.3


@dataclass
class Outcome:
    backend: str
    scenario: Scenario
    http: str | None = None  # `payhook serve --http`; None: its default
    core: str | None = None  # --versus: the other core's commit; None: the core under test
    levels: list[Level] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    stack: dict[str, bool] = field(default_factory=dict)
    profile: str = ""


def make_tenants(count: int) -> list[Tenant]:
    return [Tenant(f"bench-{index}", f"whsec_bench_{secrets.token_hex(16)}") for index in range(count)]


def send(
    port: int,
    requests: list[Prepared],
    concurrency: int,
    processes: list[servers.Process],
    options: Options,
    backend: str | None = None,
) -> Level:
    """Send prepared requests at `concurrency` on a fresh client event loop; account the CPU.

    Cores are CPU seconds per second of the level (1.0 = one core busy): each of
    `processes`, PostgreSQL's processes when `backend` is "postgres", and "other": everyone
    else on the machine (noise, including other people's PostgreSQL work otherwise).
    """
    busy = cpuacct.wait_quiet(options.quiet_cores, options.quiet_wait) if options.quiet_wait else None
    cpu = [process.cpu_seconds() for process in processes]
    machine = cpuacct.snapshot()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        level = runner.run(run_level(requests, concurrency, servers.HOST, port, options.timeout))
    machine_cores, db_cores = cpuacct.snapshot().cores_since(machine, level.seconds)
    db_cores = db_cores if backend == "postgres" else 0.0
    cores = [(p.cpu_seconds() - before) / level.seconds for p, before in zip(processes, cpu, strict=True)]
    level.extra["cores"] = [round(core, 2) for core in cores]
    level.extra["db_cores"] = round(db_cores, 2)
    other = machine_cores - sum(cores) - db_cores - level.client_cpu / level.seconds
    level.extra["other_cores"] = round(max(0.0, other), 2)
    level.extra["busy_before"] = busy
    return level


def server_stack(pid: int) -> dict[str, bool]:
    """Which event loop and HTTP parser the server loaded (uvicorn's "auto" picks by import)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {"uvloop": "uvloop/loop." in maps, "httptools": "httptools/parser/" in maps}


class Running:
    """One scenario's processes on one core and parser, ready to take levels of load."""

    def __init__(
        self, backend: str, scenario: Scenario, options: Options, workdir: Path, outcome: Outcome
    ) -> None:
        self.backend = backend
        self.scenario = scenario
        self.options = options
        self.workdir = workdir
        self.outcome = outcome
        self.tenants = make_tenants(options.tenants)
        self.handled: tuple[str, ...] = ()
        if scenario.plugins:
            import payhook_bench

            self.handled = payhook_bench.HANDLED_TYPES
        self.processes: list[servers.Process] = []
        self.sent: list[Prepared] = []
        self.handled_total = 0
        self.port = 0
        self.engine: Any = None

    @property
    def label(self) -> str:
        outcome = self.outcome
        return (
            f"{self.backend}/{self.scenario.key}"
            + (f" {outcome.http}" if outcome.http else "")
            + (f" @{outcome.core}" if outcome.core else "")
        )

    def load(self, concurrency: int, count: int) -> Level:
        requests = build_requests(count, self.tenants, self.handled, servers.HOST, self.port)  # untimed
        first = dbcheck.last_event_id(self.engine)
        level = send(self.port, requests, concurrency, self.processes, self.options, self.backend)
        level.extra["batch"] = dbcheck.mean_batch(self.engine, first)
        self.sent.extend(requests)
        level.extra["handled"] = sum(request.handled for request in requests)
        self.handled_total += level.extra["handled"]
        if self.scenario.plugins:
            drain = dbcheck.wait_drained(
                self.engine, self.handled_total, level.finished, self.options.drain_timeout
            )
            level.extra["drain_seconds"] = drain.seconds
            if drain.seconds is not None:
                busy = level.seconds + drain.seconds
                level.extra["runs_per_second"] = level.extra["handled"] / busy
        return level

    def profile(self) -> None:
        """Extra, unreported c=8 levels under py-spy: the sampler costs the server some CPU."""
        targets = {process.name.replace("payhook ", ""): process.pid for process in self.processes}
        self.outcome.profile = "\n".join(
            profiling.record(targets, self.workdir, view, lambda: self.load(8, self.options.profile_requests))
            for view in profiling.VIEWS
        )


@contextmanager
def running(
    backend: str,
    scenario: Scenario,
    options: Options,
    workdir: Path,
    http: str | None = None,
    core: servers.Core | None = None,
) -> Iterator[Running]:
    """Start the scenario's processes on a fresh database; on a clean exit, check the store."""
    workdir.mkdir(parents=True, exist_ok=True)
    run = Running(
        backend, scenario, options, workdir, Outcome(backend, scenario, http, core.label if core else None)
    )
    with servers.database(backend) as url:
        worker = scenario.worker == "in-process"
        config = servers.write_config(
            workdir / "payhook.toml", url, run.tenants, scenario.plugins, worker, options.overrides
        )
        if backend == "postgres":
            servers.upgrade_database(config, workdir, scenario.plugins, core)
        run.engine = dbcheck.connect(url)
        try:
            run.port = servers.free_port()
            # A --versus core may predate `serve --http`: then it runs its own default parser
            # (the server_stack line in the results says which one it was).
            parser = http if core is None or core.has_http_option else None
            server = servers.start_server(
                config, run.port, workdir, scenario.plugins, worker, http=parser, core=core
            )
            run.processes.append(server)
            run.outcome.stack = server_stack(server.pid)
            if scenario.plugins:
                from payhook_bench import create_tables

                create_tables(run.engine)  # before the first event reaches a handler
            if scenario.worker == "separate":
                run.processes.append(servers.start_worker(config, workdir, scenario.plugins, core=core))
            yield run
            for process in run.processes:
                process.check_alive()
            run.outcome.checks = final_checks(run.engine, run.sent, run.handled_total, bool(scenario.plugins))
        finally:
            for process in reversed(run.processes):
                process.stop()
            run.engine.dispose()


def run_scenario(
    backend: str,
    scenario: Scenario,
    options: Options,
    workdir: Path,
    http: str | None = None,
    core: servers.Core | None = None,
) -> Outcome:
    with running(backend, scenario, options, workdir, http, core) as run:
        run.load(8, options.warmup)  # not reported: fills caches, pools and the JIT-less hot paths
        for concurrency in options.concurrency:
            repeats = [run.load(concurrency, options.requests) for _ in range(options.repeat)]
            run.outcome.levels.append(median_level(repeats))
            print(f"  {run.label} c={concurrency}: {describe(run.outcome.levels[-1])}", flush=True)
        if options.profile:
            run.profile()
    return run.outcome


def run_side_by_side(
    backend: str,
    scenario: Scenario,
    options: Options,
    workdirs: Sequence[Path],
    variants: Sequence[tuple[str | None, servers.Core | None]],
) -> list[Outcome]:
    """The scenario on every (parser, core) variant at once, each on its own database, taking
    turns level by level: repetition i of a level runs every variant before repetition i + 1,
    in alternating order, so a machine that gets busier counts against all of them alike."""
    with ExitStack() as stack:
        runs = [
            stack.enter_context(running(backend, scenario, options, workdir, http, core))
            for workdir, (http, core) in zip(workdirs, variants, strict=True)
        ]
        for run in runs:
            run.load(8, options.warmup)
        for concurrency in options.concurrency:
            repeats: dict[int, list[Level]] = {index: [] for index in range(len(runs))}
            for repeat in range(options.repeat):
                order = list(enumerate(runs))
                for index, run in order if repeat % 2 == 0 else order[::-1]:
                    repeats[index].append(run.load(concurrency, options.requests))
            for index, run in enumerate(runs):
                run.outcome.levels.append(median_level(repeats[index]))
                print(f"  {run.label} c={concurrency}: {describe(run.outcome.levels[-1])}", flush=True)
        if options.profile:
            for run in runs:
                run.profile()
    return [run.outcome for run in runs]


def final_checks(engine: Any, sent: list[Prepared], handled: int, with_plugin: bool) -> dict[str, Any]:
    stored = dbcheck.check_stored(engine, ((request.tenant, request.event_id) for request in sent))
    checks: dict[str, Any] = {
        "sent": stored.sent,
        "stored": stored.stored,
        "missing": stored.missing,
        "duplicated": stored.duplicated,
        "unexpected": stored.unexpected,
        "exactly_once": stored.ok,
        "handled_sent": handled,
        "run_statuses": dbcheck.run_statuses(engine),
    }
    if with_plugin:
        checks["bench_hits"] = dbcheck.hits(engine)
    return checks


def describe(level: Level) -> str:
    cores = "+".join(f"{core:.2f}" for core in level.extra.get("cores", []))
    cores += f" db {level.extra.get('db_cores', 0):.2f} other {level.extra.get('other_cores', 0):.2f}"
    if level.extra.get("batch"):
        cores += f"  batch {level.extra['batch']:.1f}"
    text = (
        f"{level.rate:7.0f} ev/s  p50 {level.percentile_ms(50):6.2f}  p95 {level.percentile_ms(95):6.2f}  "
        f"p99 {level.percentile_ms(99):6.2f} ms  errors {level.errors}  "
        f"cores: server {cores} client {level.client_cpu / level.seconds:.2f}"
    )
    if "drain_seconds" in level.extra:
        drain = level.extra["drain_seconds"]
        text += "  drain " + ("timeout" if drain is None else f"{drain:.2f}s")
    return text
