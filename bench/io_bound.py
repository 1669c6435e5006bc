"""I/O-bound handlers: runs/s of one worker whose handler calls Stripe, with a fixed number
of runners (`max_concurrency = concurrency`: the worker before runner growth) and with
runners that grow (`max_concurrency`), side by side in one run.

A fake Stripe API on 127.0.0.1 (its own process) answers GET /v1/payment_intents/<id> after
`--delay-ms`; `[stripe] api_base` points the tenant's client at it. `--events` events, each
with one pending run of bench/iobound_plugin's handler (`ctx.fetch_latest()`, then one
upserted row), are stored before a worker process starts; the rate is the runs divided by
the time from the first run's start to the last one's end (bench/e2e.py's window).

A second scenario swaps the API call for `--cpu-ms` of pure-Python work: growth must leave
a CPU-bound handler as fast as with fixed runners. The variants take turns, alternating
their order each repetition, each on a fresh database.

    .venv/bin/python bench/io_bound.py --backend sqlite --events 500 --repeat 3
    .venv/bin/python bench/io_bound.py --backend postgres --rate-limit 1000 --markdown bench/out/io.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cpuacct import process_seconds  # noqa: E402
from e2e import window  # noqa: E402
from servers import BIN, HOST, database, free_port, plugin_env  # noqa: E402

TENANT = "bench"
# Not a real key: the fake API takes any; the SDK only wants the sk_/rk_ shape.
API_KEY = "rk_test_iobound"
PEAK_PATH = "/_peak"


# -- the fake Stripe API (a process of its own) -------------------------------------------


class FakeStripe(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, delay: float) -> None:
        super().__init__((HOST, port), FakeStripeHandler)
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = self.peak = self.calls = 0


class FakeStripeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Stripe's API
    # Headers and body in one segment: Nagle plus the client's delayed ACK would add 40 ms.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: FakeStripe

    def do_GET(self) -> None:
        fake = self.server
        if self.path == PEAK_PATH:
            with fake.lock:
                body = {"peak": fake.peak, "calls": fake.calls}
                fake.peak = fake.calls = 0
            return self._answer(200, body)
        prefix = "/v1/payment_intents/"
        if not self.path.startswith(prefix):
            return self._answer(404, {"error": {"message": f"no fake for {self.path}"}})
        with fake.lock:
            fake.in_flight += 1
            fake.calls += 1
            fake.peak = max(fake.peak, fake.in_flight)
        try:
            time.sleep(fake.delay)  # the API's latency
        finally:
            with fake.lock:
                fake.in_flight -= 1
        intent = self.path[len(prefix) :].split("?")[0]
        self._answer(200, {"id": intent, "object": "payment_intent", "status": "succeeded", "amount": 2000})

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_stripe(delay_ms: float) -> Iterator[str]:
    """The fake API's base URL, served by a child process while inside."""
    port = free_port()
    command = [sys.executable, str(Path(__file__)), "--fake-stripe", str(port), "--delay-ms", str(delay_ms)]
    process = subprocess.Popen(command)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                peak_and_reset(base)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the fake Stripe API did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def peak_and_reset(base: str) -> dict[str, int]:
    """Most API calls in flight at once, and calls made, since the last ask."""
    with urllib.request.urlopen(base + PEAK_PATH, timeout=5) as answer:
        result: dict[str, int] = json.loads(answer.read())
    return result


# -- the worker under test (a process of its own) ------------------------------------------


def run_worker_process(config_path: str) -> None:
    """`payhook worker`, with the (uninstalled) benchmark plugin handed over by name."""
    import iobound_plugin
    from payhook.config import load_config
    from payhook.receive.app import Payhook
    from payhook.server.processes import run_worker

    config = load_config(config_path)
    payhook = Payhook(config, {"iobound": iobound_plugin}, migrate=False, run_worker=True)
    run_worker(payhook, grace=5.0)


# -- one measurement ----------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    max_concurrency: int


def store_events(url: str, count: int) -> None:
    """`count` events with one pending run each, straight into a migrated store."""
    import iobound_plugin
    from payhook.config import DatabaseConfig
    from payhook.plugins.types import Handler
    from payhook.receive.envelope import parse_event, to_delivery
    from payhook.store.engine import Store
    from payhook.store.eventlog import EventLog
    from payhook.store.migrations import upgrade
    from payhook.store.runs import runs_of
    from payhook.testing.samples import fresh_event_id, load_event

    store = Store(DatabaseConfig(url=url))
    upgrade(store.engine)
    iobound_plugin.create_tables(store.engine)
    log = EventLog(store, runs_of(store))
    handler = Handler("iobound", iobound_plugin.HANDLER, iobound_plugin.HANDLED, iobound_plugin.record_latest)
    template = load_event(iobound_plugin.HANDLED)
    for start in range(0, count, 500):
        deliveries = []
        for number in range(start + 1, min(count, start + 500) + 1):
            event = {**template, "id": fresh_event_id()}
            # Each its own intent: identical calls in flight would be made once (coalesced).
            event["data"] = {"object": {**template["data"]["object"], "id": f"pi_iobound_{number}"}}
            parsed, payload = parse_event(json.dumps(event).encode())
            deliveries.append(to_delivery(TENANT, parsed, payload, 0, (handler,)))
        log.append(deliveries)
    store.dispose()


def count_done(url: str) -> tuple[int, int]:
    """(succeeded, failed or dead) runs."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM payhook_handler_run GROUP BY status")).all()
    engine.dispose()
    counts = {str(status): int(number) for status, number in rows}
    return counts.get("succeeded", 0), counts.get("failed", 0) + counts.get("dead", 0)


def measure(
    backend: str, variant: Variant, args: argparse.Namespace, api_base: str, cpu_ms: float
) -> dict[str, Any]:
    from sqlalchemy import create_engine

    with database(backend) as url, tempfile.TemporaryDirectory(prefix="payhook-iobound-") as folder:
        config = Path(folder) / "payhook.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n'
            f"[processing]\nworker = true\nconcurrency = {args.concurrency}\n"
            f"max_concurrency = {variant.max_concurrency}\nbatch_size = {args.batch_size}\n"
            f'[stripe]\napi_base = "{api_base}"\nrate_limit = {args.rate_limit}\nmax_network_retries = 0\n'
            f'[tenants.{TENANT}]\nwebhook_secrets = ["whsec_iobound"]\nplugins = ["iobound"]\n'
            f'stripe_api_key = "{API_KEY}"\n'
        )
        store_events(url, args.events)
        env = {**plugin_env([]), "PAYHOOK_IOBOUND_CPU_MS": str(cpu_ms), "PYTHONPATH": str(BENCH)}
        peak_and_reset(api_base)
        log_path = Path(folder) / "worker.log"
        command = [str(BIN / "python"), str(Path(__file__)), "--worker", str(config)]
        with open(log_path, "w") as log:
            worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + args.timeout
                done = failed = 0
                cpu_first: float | None = None
                while done + failed < args.events and time.monotonic() < deadline:
                    time.sleep(0.05)  # polling a benchmark's progress, not a test's wait
                    done, failed = count_done(url)
                    if cpu_first is None and done:
                        cpu_first = process_seconds(worker.pid)
                cpu_seconds = process_seconds(worker.pid) - (cpu_first or 0.0)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        if done < args.events:
            print(log_path.read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"{variant.name}: {done} of {args.events} runs succeeded ({failed} failed)")
        engine = create_engine(url)
        measured = window(engine, start="claimed")
        engine.dispose()
        api = peak_and_reset(api_base)
    return {
        "variant": variant.name,
        "runs": measured.runs,
        "seconds": round(measured.seconds, 3),
        "runs_per_second": round(measured.rate(measured.runs), 1),
        "cpu_ms_per_run": round(cpu_seconds * 1000 / max(1, done - 1), 3),
        "peak_api_calls": api["peak"],
        "api_calls": api["calls"],
    }


def scenario(
    backend: str, variants: list[Variant], args: argparse.Namespace, api_base: str, cpu_ms: float
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {variant.name: [] for variant in variants}
    for repetition in range(args.repeat):
        order = variants if repetition % 2 == 0 else variants[::-1]
        for variant in order:
            result = measure(backend, variant, args, api_base, cpu_ms)
            results[variant.name].append(result)
            print(json.dumps({"cpu_ms": cpu_ms, **result}), file=sys.stderr)
    return results


def summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, runs in results.items():
        rates = [run["runs_per_second"] for run in runs]
        out[name] = {
            "runs_per_second": statistics.median(rates),
            "range": [min(rates), max(rates)],
            "cpu_ms_per_run": statistics.median(run["cpu_ms_per_run"] for run in runs),
            "peak_api_calls": max(run["peak_api_calls"] for run in runs),
        }
    return out


def markdown(title: str, summarised: dict[str, dict[str, Any]], baseline: str) -> str:
    base = summarised[baseline]["runs_per_second"]
    lines = [
        f"**{title}**",
        "",
        "| runners | runs/s (median [range]) | vs fixed | worker CPU ms/run | peak API calls in flight |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in summarised.items():
        low, high = row["range"]
        lines.append(
            f"| {name} | {row['runs_per_second']:.1f} [{low:.1f}-{high:.1f}] | "
            f"{row['runs_per_second'] / base:.2f}x | {row['cpu_ms_per_run']:.2f} | {row['peak_api_calls']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=100.0, help="the fake API's latency")
    parser.add_argument(
        "--rate-limit", type=float, default=100.0, help="[stripe] rate_limit (Stripe live: 100)"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-concurrency", type=int, default=32, help="the growing variant's ceiling")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpu-ms", type=float, default=2.0, help="the CPU-bound handler's work; 0: skip it")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on one variant's drain")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("--fake-stripe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_stripe is not None:
        FakeStripe(args.fake_stripe, args.delay_ms / 1000).serve_forever()
        return
    if args.worker is not None:
        run_worker_process(args.worker)
        return
    os.environ["PAYHOOK_DISABLED_PLUGINS"] = plugin_env([])["PAYHOOK_DISABLED_PLUGINS"]
    variants = [
        Variant(f"fixed {args.concurrency}", args.concurrency),
        Variant(f"growing {args.concurrency}-{args.max_concurrency}", args.max_concurrency),
    ]
    tables = []
    report: dict[str, Any] = {"backend": args.backend, "events": args.events, "repeat": args.repeat}
    with fake_stripe(args.delay_ms) as api_base:
        io = summary(scenario(args.backend, variants, args, api_base, 0.0))
        report["io_bound"] = io
        tables.append(
            markdown(
                f"{args.backend}: handler calls fetch_latest() ({args.delay_ms:.0f} ms API), "
                f"rate_limit {args.rate_limit:g}/s, {args.events} runs, {args.repeat} repetitions",
                io,
                variants[0].name,
            )
        )
        if args.cpu_ms > 0:
            cpu = summary(scenario(args.backend, variants, args, api_base, args.cpu_ms))
            report["cpu_bound"] = cpu
            tables.append(
                markdown(
                    f"{args.backend}: CPU-bound handler ({args.cpu_ms:g} ms of Python)", cpu, variants[0].name
                )
            )
    text = "\n\n".join(tables)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
