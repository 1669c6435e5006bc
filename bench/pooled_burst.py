"""A burst through PgBouncer in transaction mode: two receivers, two workers, one killed.

Two `payhook serve` (worker = false) and two `payhook worker` processes reach PostgreSQL
through a transaction pooler (`--pooled-url`, PgBouncer from .ci/pgbouncer.ini), the
workers LISTENing on `[database] listen_url` (direct). `--events` handled events arrive at
`--rate` a second (open loop); once half are stored, worker 1 is killed with SIGKILL. Then
it checks that every delivery was answered 200 and stored once, that every run ended
`succeeded` (the killed worker's after their lease, `--lease` seconds), and reports the
receipt-to-commit lag of the runs (p50/p99), without and with the reclaimed ones.

    .venv/bin/python bench/pooled_burst.py --pooled-url postgresql+psycopg://postgres@127.0.0.1:6432/x
    .venv/bin/python bench/pooled_burst.py --no-listen-url     # workers poll instead
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "benchplugin"))  # the handler's tables (installed in the bench env)

import dbcheck  # noqa: E402
import e2e  # noqa: E402
import servers  # noqa: E402
from loadgen import build_requests, new_loop  # noqa: E402
from pacing import run_paced  # noqa: E402
from payhook_bench import HANDLED_TYPES, create_tables  # noqa: E402
from scenario import make_tenants  # noqa: E402
from sqlalchemy import make_url, text  # noqa: E402

PLUGIN = "bench"


def stored_events(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM payhook_event")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pooled-url", default="postgresql+psycopg://postgres@127.0.0.1:6432/x")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second, paced")
    parser.add_argument("--lease", type=float, default=5.0, help="[processing] lease_seconds")
    parser.add_argument("--poll", type=float, default=0.5, help="[processing] poll_interval")
    parser.add_argument("--no-listen-url", action="store_true", help="no [database] listen_url")
    parser.add_argument("--no-kill", action="store_true", help="kill no worker")
    parser.add_argument(
        "--out", type=Path, default=BENCH / "out" / f"pooled-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    tenants = make_tenants(4)
    with servers.database("postgres") as direct:
        pooled = make_url(args.pooled_url).set(database=make_url(direct).database)
        overrides = {
            "processing.lease_seconds": f"{args.lease:g}",
            "processing.poll_interval": f"{args.poll:g}",
        }
        if not args.no_listen_url:
            overrides["database.listen_url"] = f'"{direct}"'
        config = servers.write_config(
            args.out / "payhook.toml",
            pooled.render_as_string(hide_password=False),
            tenants,
            (PLUGIN,),
            worker=False,
            overrides=overrides,
        )
        servers.upgrade_database(config, args.out, (PLUGIN,))
        engine = dbcheck.connect(direct)
        create_tables(engine)
        processes: list[servers.Process] = []
        ports: list[int] = []
        try:
            for index in range(2):
                port = servers.free_port()
                processes.append(
                    servers.start_server(config, port, args.out, (PLUGIN,), False, f"serve-{index + 1}")
                )
                ports.append(port)
            workers = [servers.start_worker(config, args.out, (PLUGIN,), f"worker-{i + 1}") for i in range(2)]
            processes += workers
            requests = build_requests(args.events, tenants, HANDLED_TYPES, servers.HOST, ports[0], True)
            killed_at: list[int] = []

            def kill_halfway() -> None:
                deadline = time.monotonic() + 600
                while stored_events(engine) < args.events // 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                workers[0].popen.send_signal(signal.SIGKILL)
                killed_at.append(stored_events(engine))

            killer = threading.Thread(target=kill_halfway, daemon=True)
            if not args.no_kill:
                killer.start()
            with asyncio.Runner(loop_factory=new_loop) as runner:
                paced = runner.run(run_paced(requests, args.rate, servers.HOST, ports, 120.0, 16))
            if not args.no_kill:
                killer.join(60)
            drained = dbcheck.wait_drained(engine, args.events, time.monotonic(), 300.0)
            stored = dbcheck.check_stored(engine, ((r.tenant, r.event_id) for r in requests))
            statuses = dbcheck.run_statuses(engine)
            lags = e2e.lags(engine)
            with engine.connect() as conn:
                reclaimed = int(
                    conn.execute(
                        text("SELECT count(*) FROM payhook_handler_run WHERE attempts > 1")
                    ).scalar_one()
                )
                first_try = sorted(
                    row[0]
                    for row in conn.execute(
                        text(
                            "SELECT extract(epoch FROM r.finished_at - e.received_at) "
                            "FROM payhook_handler_run r JOIN payhook_event e ON e.id = r.event_id "
                            "WHERE r.status = 'succeeded' AND r.attempts = 1"
                        )
                    )
                )
        finally:
            for process in reversed(processes):
                process.stop()
            engine.dispose()
    statuses_ok = statuses == {"succeeded": args.events}
    print(f"through {make_url(args.pooled_url).render_as_string()}, listen_url: {not args.no_listen_url}")
    print(f"events sent: {args.events} at {args.rate:g}/s; HTTP answers: {dict(paced.http_statuses)}")
    print(
        f"stored exactly once: {stored.ok}; run statuses: {statuses} "
        f"({'ok' if statuses_ok else 'NOT ALL SUCCEEDED'})"
    )
    print(f"drained: {drained}")
    if killed_at:
        print(
            f"worker-1 killed (SIGKILL) with {killed_at[0]} events stored; "
            f"runs reclaimed after the lease: {reclaimed}"
        )
    first = e2e.Lags([float(s) for s in first_try], 0.0, 0.0)
    print(
        f"lag, receipt to handler commit: all runs p50 {lags.ms(50):.1f} ms, p99 {lags.ms(99):.1f} ms; "
        f"runs done on their first attempt p50 {first.ms(50):.1f} ms, p99 {first.ms(99):.1f} ms"
    )
    ok = stored.ok and statuses_ok and set(paced.http_statuses) == {200}
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
