"""`payhook serve --workers N` and `payhook worker --processes N`, run as real processes.

Several receivers accept on one port and write one store (an SQLite file, or PostgreSQL);
several workers drain one queue. Every signed delivery answered 200 must be stored once,
every run applied once; a receiver that dies is replaced; SIGTERM stops them all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.server import supervisor
from payhook.testing import store_backends
from payhook.testing.samples import load_event
from sqlalchemy import Engine, create_engine, text

from .processes import free_port, post_all, write_config

HAS_TESTPLUGIN = "testplugin" in {ep.name for ep in entry_points(group="payhook")}
needs_testplugin = pytest.mark.skipif(
    not HAS_TESTPLUGIN,
    reason="tests/payhook_testplugin is not installed (tox installs it: `tox run -e core`)",
)

STARTED = re.compile(r"(receiver|worker) (\d+)/(\d+) started: pid (\d+)")
DELIVERY = re.compile(r"\[(\d+)\] INFO payhook\.delivery: delivery .*event_id=(\S+)")


def payhook(*args: str) -> list[str]:
    return [sys.executable, "-m", "payhook", *args]


def bodies(count: int) -> list[bytes]:
    return [json.dumps(load_event("payment_intent.succeeded")).encode() for _ in range(count)]


def event_id(body: bytes) -> str:
    return str(json.loads(body)["id"])


def poll(
    condition: Callable[[], Any], timeout: float, what: str, state: Callable[[], Any] | None = None
) -> Any:
    """Until `condition()` is truthy (returned), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    seen = f"; last seen: {state()!r}" if state is not None else ""
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")


class Supervised:
    """One `payhook serve --workers N` or `payhook worker --processes N`, logging to a file."""

    def __init__(
        self, config: Path, args: list[str], log: Path, env: dict[str, str | None] | None = None
    ) -> None:
        """`env` adds variables to the environment; one given as None is left out of it."""
        self.log = log
        merged = {**os.environ, **(env or {})}
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                payhook(args[0], "--config", str(config), *args[1:]),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={name: value for name, value in merged.items() if value is not None},
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[int, int]:
        """Slot number -> pid of the latest child started in it."""
        return {int(m.group(2)): int(m.group(4)) for m in STARTED.finditer(self.text())}

    def wait_children(self, count: int, timeout: float = 60) -> dict[int, int]:
        def started() -> dict[int, int] | None:
            assert self.process.poll() is None, f"the supervisor exited early:\n{self.text()}"
            children = self.children()
            return children if len(children) == count else None

        found: dict[int, int] = poll(started, timeout, f"{count} children to start", self.text)
        return found

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the supervisor did not stop within {timeout}s:\n{self.text()}") from None


@contextmanager
def supervised(
    config: Path, args: list[str], log: Path, env: dict[str, str | None] | None = None
) -> Iterator[Supervised]:
    running = Supervised(config, args, log, env)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()
        for pid in running.children().values():
            # Never leave a child behind, whatever the test did to its parent.
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_healthy(url: str, process: Supervised, timeout: float = 60) -> None:
    def healthy() -> bool:
        assert process.process.poll() is None, f"the supervisor exited early:\n{process.text()}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    poll(healthy, timeout, f"{url}/healthz to answer 200", process.text)


def upgrade(config: Path) -> None:
    subprocess.run(
        payhook("db", "upgrade", "--config", str(config)), check=True, capture_output=True, timeout=120
    )


@pytest.fixture
def engine(payhook_database_url: str) -> Iterator[Engine]:
    engine = create_engine(payhook_database_url)
    yield engine
    engine.dispose()


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def run_counts(engine: Engine) -> dict[str, int]:
    return {
        status: count
        for status, count in rows(engine, "SELECT status, count(*) FROM payhook_handler_run GROUP BY status")
    }


def stored_ids(engine: Engine) -> Counter[str]:
    return Counter(row[0] for row in rows(engine, "SELECT stripe_event_id FROM payhook_event"))


def configure(tmp_path: Path, url: str, **processing: Any) -> Path:
    config = write_config(tmp_path, url, {"concurrency": 4, **processing})
    if not url.startswith("sqlite"):
        upgrade(config)  # receivers and workers never migrate PostgreSQL themselves
    return config


# -- bad counts --------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "option"), [("serve", "--workers"), ("worker", "--processes")])
@pytest.mark.parametrize("count", ["0", "-2", "two", "1.5"])
def test_a_count_that_is_not_a_positive_integer_is_refused(
    tmp_path: Path, command: str, option: str, count: str
) -> None:
    config = write_config(tmp_path, "sqlite:///payhook.db")
    result = subprocess.run(
        payhook(command, "--config", str(config), option, count), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{option}'" in result.stderr
    assert not (tmp_path / "payhook.db").exists()


@pytest.mark.parametrize(("command", "option"), [("serve", "--workers"), ("worker", "--processes")])
def test_several_processes_need_a_database_file(tmp_path: Path, command: str, option: str) -> None:
    config = write_config(tmp_path, "sqlite://")
    result = subprocess.run(
        payhook(command, "--config", str(config), option, "2"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "in-memory SQLite database is private to each process" in result.stderr


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("command", "option"), [("serve", "--workers"), ("worker", "--processes")])
def test_several_processes_on_an_unmigrated_database_are_refused_once(
    tmp_path: Path, payhook_database_url: str, command: str, option: str
) -> None:
    # PostgreSQL is upgraded on purpose: each child would refuse it, and be restarted.
    config = write_config(tmp_path, payhook_database_url)
    result = subprocess.run(
        payhook(command, "--config", str(config), option, "2"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("the database schema is not migrated") == 1
    assert "run `payhook db upgrade`" in result.stderr and "Traceback" not in result.stderr


# -- receivers ---------------------------------------------------------------------------


@needs_testplugin
@store_backends
@pytest.mark.timeout(180)
def test_two_receivers_on_one_port_store_every_event_once(
    tmp_path: Path, payhook_database_url: str, engine: Engine
) -> None:
    config = configure(tmp_path, payhook_database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--workers", "2", "--worker", "--log-level", "info"]
    sent: list[bytes] = []
    with supervised(config, args, tmp_path / "serve.log") as serve:
        children = serve.wait_children(2)
        wait_healthy(url, serve)

        def answered_by() -> set[int]:
            return {int(m.group(1)) for m in DELIVERY.finditer(serve.text())}

        def both_answered() -> bool:
            # Each round opens fresh connections; which receiver accepts each is the kernel's
            # choice, so keep sending until both have answered (or the time is up).
            batch = bodies(60)
            sent.extend(batch)
            # Every event twice, the copies interleaved so that they race each other.
            statuses = post_all([(f"{url}/conf", body) for body in batch for _ in range(2)], concurrency=16)
            assert Counter(status for _, status in statuses) == {200: 120}
            return answered_by() == set(children.values())

        poll(both_answered, 90, "both receivers to answer deliveries", answered_by)
        poll(
            lambda: run_counts(engine) == {"succeeded": len(sent)},
            90,
            "every run to succeed",
            lambda: run_counts(engine),
        )
        assert serve.stop() == 0

    stored = stored_ids(engine)
    assert set(stored) == {event_id(body) for body in sent}
    assert set(stored.values()) == {1}
    effects = Counter(row[0] for row in rows(engine, "SELECT stripe_event_id FROM testplugin_effect"))
    assert effects == Counter({event_id(body): 1 for body in sent})
    assert "Traceback" not in serve.text()


@needs_testplugin
@store_backends
@pytest.mark.timeout(180)
def test_a_killed_receiver_is_replaced_and_sigterm_stops_every_one(
    tmp_path: Path, payhook_database_url: str, engine: Engine
) -> None:
    config = configure(tmp_path, payhook_database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--workers", "2", "--no-worker"]
    with supervised(config, args, tmp_path / "serve.log") as serve:
        first = serve.wait_children(2)
        wait_healthy(url, serve)
        os.kill(first[2], signal.SIGKILL)
        replaced = poll(
            lambda: (children := serve.children())[2] != first[2] and children,
            60,
            "a replacement",
            serve.text,
        )
        assert replaced[1] == first[1]
        assert "was killed by SIGKILL" in serve.text()
        serving = f"receiver 2/2 serving (pid {replaced[2]})"
        poll(lambda: serving in serve.text(), 60, "the replacement to serve", serve.text)

        # Deliveries keep flowing while the supervisor is told to stop: whatever was
        # answered 200 must be stored; the rest were refused or never answered.
        batch = bodies(400)
        answers: list[tuple[str, int]] = []
        sender = threading.Thread(
            target=lambda: answers.extend(post_all([(f"{url}/conf", body) for body in batch], concurrency=8))
        )
        sender.start()
        poll(lambda: sum(stored_ids(engine).values()) >= 50, 60, "some deliveries to be stored")
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(60) == 0, serve.text()
        sender.join(60)
        assert not sender.is_alive()
        for pid in [*first.values(), *replaced.values()]:
            poll(lambda pid=pid: not _alive(pid), 10, f"pid {pid} to be gone")

    accepted = {event_id(body) for body, (_, status) in zip(batch, answers, strict=True) if status == 200}
    assert accepted
    assert set(status for _, status in answers) <= {200, 503, -1}
    stored = stored_ids(engine)
    assert accepted <= set(stored)
    assert set(stored.values()) == {1}
    assert "every receiver process stopped" in serve.text()


# -- workers -----------------------------------------------------------------------------


@needs_testplugin
@store_backends
@pytest.mark.timeout(180)
def test_worker_processes_drain_the_queue_each_run_once(
    tmp_path: Path, payhook_database_url: str, engine: Engine
) -> None:
    config = configure(tmp_path, payhook_database_url, batch_size=4)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    batch = bodies(240)
    # Each run takes a little while, so that neither worker can drain the queue alone
    # before the other claims.
    env: dict[str, str | None] = {"PAYHOOK_TESTPLUGIN_SLEEP": "0.02"}
    serve_args = ["serve", "--port", str(port), "--no-worker", "--log-level", "warning"]
    with supervised(config, serve_args, tmp_path / "serve.log") as serve:
        # A single `serve` migrates a new SQLite file without the supervisors' lock: let it
        # finish before the workers' supervisor looks at the schema.
        wait_healthy(url, serve)
        worker_args = ["worker", "--processes", "2"]
        with supervised(config, worker_args, tmp_path / "worker.log", env) as workers:
            children = workers.wait_children(2)
            poll(lambda: workers.text().count("payhook worker running") == 2, 60, "both workers to run")
            statuses = post_all([(f"{url}/conf", body) for body in batch], concurrency=8)
            assert Counter(status for _, status in statuses) == {200: len(batch)}
            poll(
                lambda: run_counts(engine) == {"succeeded": len(batch)},
                120,
                "every run to succeed",
                lambda: run_counts(engine),
            )
            assert workers.stop() == 0, workers.text()
            assert "every worker process stopped" in workers.text()

    effects = rows(engine, "SELECT stripe_event_id, attempt, pid FROM testplugin_effect")
    assert Counter(stripe_id for stripe_id, _, _ in effects) == Counter({event_id(body): 1 for body in batch})
    assert {attempt for _, attempt, _ in effects} == {1}
    by_pid = Counter(pid for _, _, pid in effects)
    # Both did a real share: on SQLite neither holds the write lock so long that the other
    # starves.
    assert set(by_pid) == set(children.values()), by_pid
    assert min(by_pid.values()) >= len(batch) // 10, by_pid
    assert "Traceback" not in workers.text()


# -- the supervisor itself ---------------------------------------------------------------


def exit_at_once(number: int, count: int, ready: Any) -> None:
    """A child that fails as soon as it starts (run in a spawned process)."""
    sys.exit(3)


@pytest.mark.timeout(60)
def test_a_child_that_keeps_dying_at_start_makes_the_supervisor_give_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "FIRST_RESTART_DELAY", 0.05)
    runner = supervisor.Supervisor("test", exit_at_once, (), 2, stop_timeout=10)
    with caplog.at_level("INFO", logger="payhook.supervisor"):
        assert runner.run() == supervisor.EXIT_GAVE_UP
    assert f"before it was ready, the {supervisor.MAX_QUICK_DEATHS}th time in a row; giving up" in caplog.text
    assert "exited with status 3" in caplog.text
    assert runner.pids() == []


@pytest.mark.timeout(120)
def test_the_first_receiver_serves_the_operator_app_counting_every_receiver(tmp_path: Path) -> None:
    operator_port, port = free_port(), free_port()
    token = "operator-token-for-the-test-0123456789"
    config = write_config(tmp_path, "sqlite:///payhook.db")
    config.write_text(config.read_text() + f'[operator]\nport = {operator_port}\ntoken = "{token}"\n')
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--workers", "2", "--no-worker", "--log-level", "info"]
    env: dict[str, str | None] = {"PROMETHEUS_MULTIPROC_DIR": None}  # the supervisor makes its own
    with supervised(config, args, tmp_path / "serve.log", env) as serve:
        children = serve.wait_children(2)
        wait_healthy(url, serve)
        sent = 0

        def both_answered() -> bool:
            nonlocal sent
            statuses = post_all([(f"{url}/conf", body) for body in bodies(40)], concurrency=16)
            assert Counter(status for _, status in statuses) == {200: 40}
            sent += 40
            return {int(m.group(1)) for m in DELIVERY.finditer(serve.text())} == set(children.values())

        poll(both_answered, 60, "both receivers to answer deliveries", serve.text)
        metrics = httpx.get(
            f"http://127.0.0.1:{operator_port}/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert metrics.status_code == 200
        counted = re.search(
            r'^payhook_deliveries_total\{outcome="accepted",tenant="conf"\} (\S+)$', metrics.text, re.M
        )
        assert counted is not None, metrics.text
        assert float(counted.group(1)) == sent
        assert serve.text().count("operator app on") == 1
        assert serve.stop() == 0
