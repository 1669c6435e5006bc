"""End to end against the original Django module, side by side in one run.

Each system gets core 0 (`--cores` for two); the original's load generator runs on the last
core and sends N signed `payment_intent.succeeded` events for N pending orders over 8
keep-alive connections. The figure is end-to-end events/s: for the original (handlers
inline) its answer rate; for payhook, from the first event received to the last order
marked paid, read from the store. Layouts:

* `original`: `../shared/bench/original/serve.sh` (gunicorn, 1 sync worker, SQLite), or
  `$PAYHOOK_BENCH_ORIGINAL/serve.sh`.
* `split`: `payhook serve --no-worker` plus one `payhook worker`, both on core 0.
* `inline`: the default deployment, `payhook serve` with its in-process worker, on core 0.
* `two-cores`: the receiver on core 0, the worker on core 1 (load generator on core 1 too).

    .venv/bin/python bench/vs_original.py --events 2000 --repeat 3 --json-out bench/out/vs.json
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The original lives beside the checkout (../shared/bench/original); a checkout elsewhere (a
# fresh clone in /tmp, say) names it with PAYHOOK_BENCH_ORIGINAL.
ORIGINAL_ENV = "PAYHOOK_BENCH_ORIGINAL"
ORIGINAL = Path(os.environ.get(ORIGINAL_ENV) or ROOT.parent / "shared" / "bench" / "original").resolve()
BIN = Path(sys.executable).parent
SECRET = "whsec_bench_secret"
TENANT = "pycon-bench"
HOST = "127.0.0.1"

sys.path.insert(0, str(BENCH))
from servers import free_port, plugin_env  # noqa: E402


def wait_for_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")


def original_venv() -> Path:
    """The original's virtualenv, as serve.sh finds it (serve.sh makes it on first use)."""
    return Path(os.environ.get("ORIGINAL_VENV", Path.home() / ".cache/payhook-original-venv"))


def loadgen(url: str, events: int, cpu: int, out: Path, check: list[str]) -> dict[str, Any]:
    venv_python = original_venv() / "bin/python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    command = [
        python, str(ORIGINAL / "loadgen.py"), "--url", url, "--secret", SECRET,
        "--events", str(events), "--concurrency", "8", "--mix", "succeeded",
        "--cpu", str(cpu), "--json-out", str(out), "--max-seconds", "300", *check,
    ]  # fmt: skip
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=400)
    return dict(json.loads(out.read_text()))


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def run_original(events: int, folder: Path) -> float:
    port = free_port()
    db = folder / "original.sqlite3"
    command = ["bash", str(ORIGINAL / "serve.sh"), str(port), "0", str(events), str(db)]
    # serve.sh first builds the original's virtualenv when there is none yet.
    startup = 60 if (original_venv() / "bin/gunicorn").exists() else 600
    with started(command, dict(os.environ), folder / "original.log"):
        wait_for_port(port, startup)
        result = loadgen(
            f"http://{HOST}:{port}/webhooks/stripe/{TENANT}/", events, last_core(), folder / "original.json",
            ["--check-sqlite", str(db)],
        )  # fmt: skip
    if result.get("ok2xx", events) < events or not result.get("check", {}).get("ok", True):
        raise SystemExit(f"the original did not answer or pay everything: {json.dumps(result)[:400]}")
    return float(result["events_per_s"])


def payhook_config(folder: Path, worker_in_serve: bool, synchronous: str) -> Path:
    config = folder / "payhook.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{folder}/payhook.db"\nsqlite_synchronous = "{synchronous}"\n'
        f"[processing]\nworker = {'true' if worker_in_serve else 'false'}\n"
        f'[tenants.{TENANT}]\nwebhook_secrets = ["{SECRET}"]\nplugins = ["registration"]\n'
    )
    return config


def create_orders(config: Path, count: int) -> None:
    """N pending orders with ids 1..N, 450.00 USD, as the original's bench_reset makes."""
    from payhook import load_config
    from payhook.store.engine import Store
    from payhook.store.migrations import upgrade
    from payhook_registration.orders import create_order
    from sqlmodel import Session

    store = Store(load_config(config).database)
    upgrade(store.engine)
    with Session(store.engine) as session:
        for number in range(1, count + 1):
            create_order(
                session, tenant=TENANT, reference=f"bench-{number}", total=Decimal("450.00"), currency="usd"
            )
        session.commit()
    store.dispose()


def paid_window(config: Path, count: int, timeout: float) -> float:
    """Seconds from the first event received to the last order paid, once all are paid."""
    import sqlite3

    path = str(config.parent / "payhook.db")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as conn:
            paid = conn.execute("SELECT count(*) FROM registration_order WHERE status = 'paid'").fetchone()[0]
            if paid == count:
                first = conn.execute("SELECT min(received_at) FROM payhook_event").fetchone()[0]
                last = conn.execute("SELECT max(updated_at) FROM registration_order").fetchone()[0]
                return (_time(last) - _time(first)).total_seconds()
        time.sleep(0.1)
    raise SystemExit(f"not every order was paid within {timeout:.0f}s")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_payhook(layout: str, events: int, folder: Path, synchronous: str) -> dict[str, float]:
    config = payhook_config(folder, layout == "inline", synchronous)
    env = plugin_env(["registration"])
    os.environ["PAYHOOK_DISABLED_PLUGINS"] = env["PAYHOOK_DISABLED_PLUGINS"]
    create_orders(config, events)
    port = free_port()
    serve = ["taskset", "-c", "0", str(BIN / "payhook"), "serve", "--config", str(config),
             "--port", str(port), "--log-level", "warning"]  # fmt: skip
    if layout != "inline":
        serve.append("--no-worker")
    worker_core = "1" if layout == "two-cores" else "0"
    worker = ["taskset", "-c", worker_core, str(BIN / "payhook"), "worker", "--config", str(config),
              "--log-level", "warning"]  # fmt: skip
    with started(serve, env, folder / "serve.log"):
        wait_for_port(port)
        with started(worker, env, folder / "worker.log") if layout != "inline" else _nothing():
            answered = loadgen(
                f"http://{HOST}:{port}/{TENANT}", events, last_core(), folder / "payhook.json", []
            )
            window = paid_window(config, events, 300)
    return {"end_to_end": events / window, "answered": float(answered["events_per_s"])}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def last_core() -> int:
    return (os.cpu_count() or 2) - 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--layouts", default="original,split,inline,two-cores")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal"])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    figures: dict[str, list[float]] = {layout: [] for layout in layouts}
    answered: dict[str, list[float]] = {layout: [] for layout in layouts}
    for round_ in range(args.repeat):
        for layout in layouts:
            with tempfile.TemporaryDirectory(prefix=f"payhook-vs-{layout}-") as folder:
                if layout == "original":
                    figures[layout].append(run_original(args.events, Path(folder)))
                else:
                    result = run_payhook(layout, args.events, Path(folder), args.synchronous)
                    figures[layout].append(result["end_to_end"])
                    answered[layout].append(result["answered"])
            print(
                f"round {round_ + 1} {layout}: {figures[layout][-1]:.0f} events/s end to end", file=sys.stderr
            )
    base = statistics.median(figures["original"]) if figures.get("original") else None
    summary = {
        layout: {
            "end_to_end_median": round(statistics.median(values)),
            "runs": [round(value) for value in values],
            "vs_original": round(statistics.median(values) / base, 2) if base else None,
            "answered_median": round(statistics.median(answered[layout])) if answered[layout] else None,
        }
        for layout, values in figures.items()
    }
    text = json.dumps({"events": args.events, "synchronous": args.synchronous, "layouts": summary}, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
