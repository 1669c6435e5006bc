"""Databases, config files and the server processes a benchmark scenario runs against."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from cpuacct import process_seconds
from loadgen import Tenant

__all__ = [
    "Core",
    "Process",
    "core_from",
    "database",
    "free_port",
    "plugin_env",
    "start_baseline",
    "start_server",
    "start_worker",
    "upgrade_database",
    "use_core_rev",
    "write_config",
]

HOST = "127.0.0.1"  # the benchmark never listens or sends anywhere else
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BIN = Path(sys.executable).parent
BENCH = Path(__file__).resolve().parent
# `payhook serve --workers` for every server started (run.py --serve-workers); 1 leaves it out.
SERVE_WORKERS = 1


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL for one scenario, removed afterwards."""
    if backend == "sqlite":
        # The same ext4 disk as the repo (no tmpfs here), so commits really reach the disk.
        with tempfile.TemporaryDirectory(prefix="payhook-bench-") as folder:
            yield f"sqlite:///{folder}/payhook.db"
        return
    import psycopg

    name = f"payhook_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(
    path: Path,
    url: str,
    tenants: Sequence[Tenant],
    plugins: Sequence[str],
    worker: bool,
    overrides: Mapping[str, str] | None = None,
) -> Path:
    """A payhook TOML config: every tenant enables the same plugins.

    `overrides` maps "database.KEY" or "processing.KEY" to a TOML literal, for trying out
    settings (say "processing.concurrency" = "1") under the same load.
    """
    overrides = dict(overrides or {})
    sections: dict[str, dict[str, str]] = {
        "database": {"url": f'"{url}"'},
        "processing": {"mode": '"queued"', "worker": "true" if worker else "false"},
    }
    for dotted, literal in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections or not key:
            raise ValueError(f"--set {dotted}: only database.KEY and processing.KEY can be set")
        sections[section][key] = literal
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"{key} = {literal}" for key, literal in values.items()), ""]
    plugin_list = ", ".join(f'"{name}"' for name in plugins)
    for tenant in tenants:
        lines += [
            f"[tenants.{tenant.slug}]",
            f'webhook_secrets = ["{tenant.secret}"]',
            f"plugins = [{plugin_list}]",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def plugin_env(enabled: Sequence[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for payhook processes: every installed plugin but `enabled` blocked.

    Other plugins may be installed in the same venv (tests' fake ones, say); blocking them
    keeps their imports and hooks out of the measurement. `extra` adds variables (the bench
    plugin's handler sleep, say).
    """
    installed = {entry_point.name for entry_point in entry_points(group="payhook")}
    env = dict(os.environ)
    env["PAYHOOK_DISABLED_PLUGINS"] = ",".join(sorted(installed - set(enabled)))
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Core:
    """A payhook core other than the one installed: `path` holds its `payhook` package."""

    label: str  # the commit, for the tables
    path: Path

    @property
    def has_http_option(self) -> bool:
        """Whether its `payhook serve` takes --http (older ones pick their parser themselves)."""
        cli = self.path / "payhook" / "cli.py"
        return cli.exists() and '"--http"' in cli.read_text(encoding="utf-8")


def _with_core(env: dict[str, str], core: Core | None) -> dict[str, str]:
    """`env` with `core` first on PYTHONPATH (the venv installs payhook as a plain path)."""
    if core is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(core.path), env.get("PYTHONPATH")]))
    return env


@dataclass
class Process:
    """A child process we started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """This process's CPU and its live descendants' (the receivers of `serve --workers`)."""
        total = 0.0
        for pid in _with_descendants(self.pid):
            with contextlib.suppress(OSError):  # it ended while we looked
                total += process_seconds(pid)
        return total

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; log tail:\n{tail}")

    def stop(self, grace: float = 40.0) -> None:
        """SIGTERM (uvicorn and the worker shut down gracefully on it), then SIGKILL."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _with_descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def _spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Process:
    handle = log.open("wb")
    popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=BENCH)
    handle.close()
    return Process(name, popen, log)


def _wait_http(process: Process, port: int, timeout: float = 60.0) -> None:
    """Until GET /healthz answers 200 (the store is reachable and the lifespan ran)."""
    deadline = time.monotonic() + timeout
    request = f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{process.name} did not answer /healthz on port {port} within {timeout}s")


def _wait_log(process: Process, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        if text in process.log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{process.name} did not log {text!r} within {timeout}s")


def start_server(
    config: Path,
    port: int,
    workdir: Path,
    enabled: Sequence[str],
    worker: bool,
    log_name: str = "serve",
    http: str | None = None,
    core: Core | None = None,
) -> Process:
    """`payhook serve` (one uvicorn process), ready to take requests; `http` picks its parser,
    `core` the payhook it runs (default: the installed one, or --core-rev's)."""
    argv = [str(BIN / "payhook"), "serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--log-level", "warning", "--worker" if worker else "--no-worker"]
    if SERVE_WORKERS > 1:
        argv += ["--workers", str(SERVE_WORKERS)]
    if http is not None:
        argv += ["--http", http]
    env = _with_core(plugin_env(enabled), core)
    process = _spawn("payhook serve", argv, workdir / f"{log_name}.log", env)
    _wait_http(process, port)
    return process


def start_worker(
    config: Path,
    workdir: Path,
    enabled: Sequence[str],
    log_name: str = "worker",
    extra_env: Mapping[str, str] | None = None,
    core: Core | None = None,
) -> Process:
    """`payhook worker` in its own process, ready to claim runs."""
    argv = [str(BIN / "payhook"), "worker", "--config", str(config), "--log-level", "warning"]
    env = _with_core(plugin_env(enabled, extra_env), core)
    process = _spawn("payhook worker", argv, workdir / f"{log_name}.log", env)
    _wait_log(process, "payhook worker running")
    return process


def start_baseline(config: Path, port: int, workdir: Path, http: str | None = None) -> Process:
    """The bare Starlette app that only verifies signatures, on the same uvicorn stack."""
    argv = [sys.executable, str(BENCH / "baseline_app.py"), "--config", str(config), "--port", str(port)]
    if http is not None:
        argv += ["--http", http]
    log = workdir / (f"baseline-{http}.log" if http else "baseline.log")
    process = _spawn("baseline", argv, log, dict(os.environ))
    _wait_http(process, port)
    return process


def upgrade_database(config: Path, workdir: Path, enabled: Sequence[str], core: Core | None = None) -> None:
    """`payhook db upgrade`: serve migrates SQLite itself but leaves PostgreSQL to the operator."""
    log = workdir / "upgrade.log"
    with log.open("wb") as handle:
        subprocess.run(
            [str(BIN / "payhook"), "db", "upgrade", "--config", str(config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=_with_core(plugin_env(enabled), core),
            check=True,
            timeout=120,
        )


def use_core_rev(rev: str, out: Path) -> str:
    """Export core/ at `rev` and put it first on the servers' PYTHONPATH; return the short hash.

    Others edit core/ in this working tree while benchmarks run; an exported revision keeps a
    run's numbers tied to one commit. The venv installs payhook as a plain path (.pth), so
    PYTHONPATH takes precedence over it in the server and worker processes.
    """
    core = core_from(rev, out)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(core.path), os.environ.get("PYTHONPATH")]))
    return core.label


def core_from(spec: str, out: Path) -> Core:
    """The core that `spec` names: a checkout of this repository (say, a `git worktree` of an
    older commit), or a git revision, exported with `git archive` into `out`."""
    folder = Path(spec)
    if folder.is_dir():
        path = folder / "core" if (folder / "core" / "payhook").is_dir() else folder
        if not (path / "payhook").is_dir():
            raise ValueError(f"{spec}: no payhook package in it (nor in its core/)")
        # A checkout (or `git worktree`) has a .git entry; an exported copy has none.
        label = _git_short("HEAD", folder) if (folder / ".git").exists() else None
        return Core(label or folder.name, path.resolve())
    short = _git_short(spec, BENCH)
    if short is None:
        raise ValueError(f"{spec}: neither a folder nor a git revision")
    target = out / f"core-{short}"
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", short, "core"], capture_output=True, check=True, cwd=BENCH.parent
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return Core(short, target / "core")


def _git_short(rev: str, where: Path) -> str | None:
    found = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True, cwd=where)
    return found.stdout.strip() if found.returncode == 0 else None
