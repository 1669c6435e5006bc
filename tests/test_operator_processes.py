"""`payhook serve` with `[operator]` and a separate `payhook worker`, as real processes.

Metrics are summed across processes through PROMETHEUS_MULTIPROC_DIR: the deliveries are
counted by `serve`, the handler runs by the worker, and `serve`'s /metrics reports both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest
from payhook.testing import TEST_SECRET, signed_headers, wait_until
from payhook.testing.samples import load_event
from prometheus_client.parser import text_string_to_metric_families

from .processes import free_port

pytestmark = pytest.mark.skipif(
    "testplugin" not in {ep.name for ep in entry_points(group="payhook")},
    reason="payhook-testplugin is not installed",
)

TOKEN = "operator-token-for-process-tests-42"


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(
        '[database]\nurl = "sqlite:///payhook.db"\n'
        "[processing]\nworker = false\npoll_interval = 0.05\n"
        '[logging]\nformat = "json"\n'
        f'[operator]\nport = {port}\ntoken = {{ "$env" = "OPS_TOKEN" }}\n'
        '[tenants.conf]\nwebhook_secrets = [{ "$env" = "CONF_WHSEC" }]\nplugins = ["testplugin"]\n'
    )
    return path


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "payhook", *args], env=env, stderr=stderr)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    answer.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_with_operator_and_a_separate_worker(tmp_path: Path) -> None:
    port, operator_port = free_port(), free_port()
    config = write_config(tmp_path, operator_port)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "CONF_WHSEC": TEST_SECRET,
        "OPS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{operator_port}/metrics"
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    serve_args = ["serve", "--config", str(config), "--port", str(port)]
    with started(serve_args, env, serve_log) as serve:
        wait_until(lambda: serve.poll() is not None or up(f"{base}/healthz"), what="payhook serve")
        assert serve.poll() is None, serve_log.read_text()
        assert httpx.get(metrics_url, timeout=5).status_code == 401  # the operator app, behind its token

        events = [load_event("payment_intent.succeeded") for _ in range(3)]
        for event in [*events, load_event("customer.created")]:
            body = json.dumps(event).encode()
            assert httpx.post(f"{base}/conf", content=body, headers=signed_headers(body)).status_code == 200
        body = json.dumps(load_event("customer.created")).encode()
        bad = httpx.post(f"{base}/conf", content=body, headers=signed_headers(body, "whsec_wrong"))
        assert bad.status_code == 400
        assert httpx.post(f"{base}/nobody", content=body, headers=signed_headers(body)).status_code == 404

        queued = scrape(metrics_url)
        assert queued[("payhook_runs_due", ())] == 3  # no worker yet: the gauges read the store

        with started(["worker", "--config", str(config)], env, worker_log) as worker:

            def handled() -> bool:
                assert worker.poll() is None, worker_log.read_text()
                key = (
                    "payhook_handler_runs_total",
                    (("outcome", "succeeded"), ("plugin", "testplugin"), ("tenant", "conf")),
                )
                return scrape(metrics_url).get(key) == 3

            wait_until(handled, what="the worker's three runs in serve's /metrics")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0

        metrics = scrape(metrics_url)
        deliveries = {
            dict(labels)["outcome"]: value
            for (name, labels), value in metrics.items()
            if name == "payhook_deliveries_total" and dict(labels)["tenant"] == "conf"
        }
        assert deliveries == {"accepted": 3, "ignored": 1, "invalid_signature": 1}
        assert metrics[("payhook_deliveries_total", (("outcome", "unknown_tenant"), ("tenant", "")))] == 1
        assert metrics[("payhook_ingest_seconds_count", ())] == 6
        assert metrics[("payhook_handler_seconds_count", (("plugin", "testplugin"),))] == 3
        assert metrics[("payhook_runs_due", ())] == 0
        assert metrics[("payhook_store_up", ())] == 1

        serve.send_signal(signal.SIGTERM)
        serve.wait(30)

    worker_lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line.startswith("{")]
    [started_line] = [line for line in worker_lines if line["message"].startswith("payhook started")]
    assert "handler runs: executed by this process" in started_line["message"]
    assert "in-process" not in worker_log.read_text() and "worker in" not in worker_log.read_text()
    runs = [line for line in worker_lines if line["message"] == "run"]
    assert sorted(line["event_id"] for line in runs) == sorted(event["id"] for event in events)

    serve_lines = serve_log.read_text().splitlines()
    # uvicorn prints two lines of its own before the app's lifespan starts; every line
    # from then on is JSON.
    startup = next(i for i, line in enumerate(serve_lines) if "payhook started" in line)
    records = [json.loads(line) for line in serve_lines[startup:]]
    assert "handler runs: left to `payhook worker` processes" in records[0]["message"]
    assert any(r["message"] == f"operator app on http://127.0.0.1:{operator_port}" for r in records)
    assert sum(1 for r in records if r["message"] == "delivery") == 6
    assert any(r["logger"] == "payhook.operator.access" and r["path"] == "/metrics" for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines, as JSON too


def test_serve_refuses_to_start_when_the_operator_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, taken.getsockname()[1])
        env = {**os.environ, "CONF_WHSEC": TEST_SECRET, "OPS_TOKEN": TOKEN}
        log = tmp_path / "serve.log"
        with started(["serve", "--config", str(config), "--port", str(free_port())], env, log) as serve:
            wait_until(lambda: serve.poll() is not None, what="payhook serve to give up")
            assert serve.returncode != 0
    assert "[operator] cannot listen on 127.0.0.1" in log.read_text()
