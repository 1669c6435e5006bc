"""What psycopg's server-side prepared statements save the core on a direct PostgreSQL.

psycopg prepares a statement on the server once a connection ran it `prepare_threshold`
times (5 by default). Behind a transaction pooler that breaks: the next transaction may run
on another server connection, where the statement does not exist. This measures the core's
hot path without them (`prepare_threshold = None`) against with them, on one connection
pool, alternating the two in rounds so that the machine's load hits both alike:

* ingest: a batch of 8 deliveries with one run each (BEGIN + INSERT, runs + NOTIFY + COMMIT);
* claim: 8 due runs claimed under a lease;
* succeed: their 8 success marks in one statement.

    .venv/bin/python bench/prepared.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

HANDLED = "payment_intent.succeeded"
BATCH = 8


def one_round(
    store: Any, log: Any, runs: Any, handler: Any, template: dict[str, Any], iterations: int
) -> tuple[float, float]:
    """Microseconds per ingest + claim + succeed of one batch of BATCH, over `iterations`:
    wall time, and this process's CPU time."""
    from payhook.receive.envelope import parse_event, to_delivery
    from payhook.testing.samples import fresh_event_id

    owner = uuid.uuid4().hex
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        deliveries = []
        for _ in range(BATCH):
            parsed, payload = parse_event(json.dumps({**template, "id": fresh_event_id()}).encode())
            deliveries.append(to_delivery("bench", parsed, payload, 0, (handler,)))
        log.append(deliveries)
        claimed = runs.claim(owner, BATCH, 60.0)
        runs.succeed_many([(run, 1.0) for run in claimed])
    return (time.perf_counter() - start) / iterations * 1e6, (time.process_time() - cpu) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=300, help="batches per round and variant")
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="commit with synchronous_commit on (the default leaves it off, so that the disk's "
        "flushes do not drown the statements' own cost)",
    )
    args = parser.parse_args()

    from payhook.config import DatabaseConfig
    from payhook.plugins.types import Handler
    from payhook.store.engine import Store
    from payhook.store.eventlog import EventLog
    from payhook.store.migrations import upgrade
    from payhook.store.runs import runs_of
    from payhook.testing.postgres import postgres_database
    from payhook.testing.samples import load_event
    from sqlalchemy import create_engine, event, make_url

    handler = Handler("bench", "payhook_bench.record_payment", HANDLED, lambda event, ctx: None)
    template = load_event(HANDLED)
    results: dict[str, list[tuple[float, float]]] = {
        "prepared (threshold 5)": [],
        "never prepared (None)": [],
    }
    with postgres_database(args.url) as url:
        if not args.fsync:
            admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(
                    f'ALTER DATABASE "{make_url(url).database}" SET synchronous_commit = off'
                )
            admin.dispose()
        stores = {}
        for name, threshold in (("prepared (threshold 5)", 5), ("never prepared (None)", None)):
            store = Store(DatabaseConfig(url=url, pool_size=2))

            def set_threshold(dbapi: Any, _record: Any, threshold: int | None = threshold) -> None:
                dbapi.prepare_threshold = threshold

            event.listen(store.engine, "connect", set_threshold)
            if not stores:
                upgrade(store.engine)
            runs = runs_of(store)
            stores[name] = (store, EventLog(store, runs), runs)
        for store, log, runs in stores.values():
            one_round(store, log, runs, handler, template, 50)  # warm up: connect, prepare
        for _ in range(args.rounds):
            for name, (store, log, runs) in stores.items():
                results[name].append(one_round(store, log, runs, handler, template, args.iterations))
        for store, _, _ in stores.values():
            store.dispose()
    print(
        f"per batch of {BATCH} (ingest + claim + succeed), "
        f"median of {args.rounds} rounds of {args.iterations}:"
    )
    for name, samples in results.items():
        wall = [w for w, _ in samples]
        cpu = [c for _, c in samples]
        print(
            f"{name:24} wall {statistics.median(wall):7.0f} µs (min {min(wall):.0f}), "
            f"client CPU {statistics.median(cpu):6.0f} µs"
        )


if __name__ == "__main__":
    main()
