"""The core's cost per handler run: one `payhook worker` draining pre-stored runs.

Stores N events whose runs call a handler that does nothing (`PAYHOOK_BENCH_NOOP=1`), then
starts one `payhook worker` process (pinned to one core with --cpu) and times it until every
run has succeeded. Reports runs/s and the worker's CPU time per run (user + system, from
/proc), which is the core's own cost: the handler does no work.

    .venv/bin/python bench/runcost.py --backend sqlite --runs 20000 --cpu 0
    .venv/bin/python bench/runcost.py --backend postgres --runs 20000 --cpu 0 --core-rev HEAD~3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cpuacct import process_seconds  # noqa: E402
from servers import BIN, database, plugin_env, use_core_rev  # noqa: E402

HANDLED = "payment_intent.succeeded"


def store_events(url: str, count: int, tenant: str, plugin: str = "bench") -> None:
    """Put `count` events with one pending run each straight into the store.

    With `plugin="registration"`: `count` pending orders (450.00 USD) and, for each, a
    `payment_intent.succeeded` that pays it, run by payhook-registration's handler.
    """
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
    log = EventLog(store, runs_of(store))
    handler = Handler("bench", "payhook_bench.record_payment", HANDLED, lambda event, ctx: None)
    template = load_event(HANDLED)
    if plugin == "registration":
        handler = Handler(
            "registration", "payhook_registration.payments.intent_succeeded", HANDLED, lambda event, ctx: None
        )
        create_orders(store, count, tenant)
    for start in range(0, count, 500):
        deliveries = []
        for number in range(start + 1, start + min(500, count - start) + 1):
            event = {**template, "id": fresh_event_id()}
            if plugin == "registration":
                intent = {**template["data"]["object"], "amount_received": 45000, "amount": 45000}
                intent["id"] = f"pi_bench_{number}"
                intent["metadata"] = {"order_id": str(number)}
                event["data"] = {"object": intent}
            parsed, payload = parse_event(json.dumps(event).encode())
            deliveries.append(to_delivery(tenant, parsed, payload, 0, (handler,)))
        log.append(deliveries)
    store.dispose()


def create_orders(store: Any, count: int, tenant: str) -> None:
    from decimal import Decimal

    from payhook_registration.orders import create_order
    from sqlmodel import Session

    with Session(store.engine) as session:
        for number in range(1, count + 1):
            create_order(
                session, tenant=tenant, reference=f"bench-{number}", total=Decimal("450.00"), currency="usd"
            )
        session.commit()


def count_done(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        done = conn.execute(text("SELECT count(*) FROM payhook_handler_run WHERE status = 'succeeded'"))
        value = int(done.scalar_one())
    engine.dispose()
    return value


def measure(
    backend: str, runs: int, cpu: int | None, concurrency: int, timeout: float, plugin: str = "bench"
) -> dict[str, Any]:
    with database(backend) as url, tempfile.TemporaryDirectory(prefix="payhook-runcost-") as folder:
        config = Path(folder) / "payhook.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n'
            f"[processing]\nworker = true\nconcurrency = {concurrency}\nbatch_size = 64\n"
            f'[tenants.bench]\nwebhook_secrets = ["whsec_bench"]\nplugins = ["{plugin}"]\n'
        )
        env = {**plugin_env([plugin]), "PAYHOOK_BENCH_NOOP": "1"}
        # The same plugins as the worker's, so both see the same migration branches.
        os.environ["PAYHOOK_DISABLED_PLUGINS"] = env["PAYHOOK_DISABLED_PLUGINS"]
        store_events(url, runs, "bench", plugin)
        command = [str(BIN / "payhook"), "worker", "--config", str(config), "--log-level", "warning"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        started = time.perf_counter()
        log = open(Path(folder) / "worker.log", "w")  # noqa: SIM115 - closed with the process
        worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = started + timeout
            done = 0
            # The window opens at the first finished run: start-up (imports, migrations
            # check) is not a per-run cost.
            first: tuple[float, float, int] | None = None
            while done < runs and time.perf_counter() < deadline:
                time.sleep(0.02)
                done = count_done(url)
                if first is None and done:
                    first = (time.perf_counter(), process_seconds(worker.pid), done)
            assert first is not None
            elapsed = time.perf_counter() - first[0]
            cpu_seconds = process_seconds(worker.pid) - first[1]
            counted = runs - first[2]
            if counted <= 0:
                # Every run finished before the first poll: nothing inside the window.
                raise SystemExit(f"all {runs} runs finished before the first poll; use more --runs")
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
            if done < runs:
                print((Path(folder) / "worker.log").read_text()[-3000:], file=sys.stderr)
        if done < runs:
            raise SystemExit(f"only {done} of {runs} runs succeeded in {timeout:.0f}s")
        return {
            "backend": backend,
            "handler": "no-op" if plugin == "bench" else "payhook-registration's payment_intent.succeeded",
            "runs": runs,
            "seconds": round(elapsed, 3),
            "runs_per_second": round(counted / elapsed),
            "cpu_ms_per_run": round(cpu_seconds * 1000 / counted, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--cpu", type=int, default=None, help="pin the worker to this core (taskset)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument(
        "--plugin",
        default="bench",
        choices=["bench", "registration"],
        help="bench: a no-op handler (the core's own cost); registration: paying an order",
    )
    parser.add_argument("--core-rev", default=None, help="serve core/ as committed at this revision")
    args = parser.parse_args()
    if args.core_rev:
        use_core_rev(args.core_rev, Path(tempfile.mkdtemp(prefix="payhook-runcost-core-")))
    print(json.dumps(measure(args.backend, args.runs, args.cpu, args.concurrency, args.timeout, args.plugin)))


if __name__ == "__main__":
    main()
