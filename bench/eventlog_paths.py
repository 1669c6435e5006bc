"""The ingest write alone: one statement per event against one multi-row INSERT per batch.

    .venv/bin/python bench/eventlog_paths.py --backend sqlite --batch 1,4,16
    .venv/bin/python bench/eventlog_paths.py --backend postgres --batch 4,16 --repeat 5

Calls `EventLog.append` in this process, with no HTTP and no event loop, on a fresh database
(SQLite in a temporary folder on the repo's disk, or a new PostgreSQL database on
127.0.0.1:5432, dropped afterwards). Each batch holds `--batch` new events, a third of them
with one handler (one run each); the two paths alternate, `--repeat` times each, and the
median is reported with the range. `wall` is elapsed time per event, `cpu` this thread's CPU
time per event (less sensitive to a busy machine). On SQLite only the one-statement path
runs: the core's multi-row write is PostgreSQL's alone now (compiled for psycopg's native
cursor, `$1` placeholders), so it cannot be tried on SQLite's cursor any more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from payhook.config import DatabaseConfig
from payhook.plugins.types import Handler
from payhook.receive.envelope import parse_event, to_delivery
from payhook.store.engine import Store
from payhook.store.eventlog import Delivery, EventLog
from payhook.store.migrations import upgrade
from payhook.store.runs import runs_of
from payhook.testing.samples import load_event

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
HANDLER = Handler("bench", "record", "payment_intent.succeeded", lambda event, ctx: None)


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="payhook-bench-", dir=".") as folder:
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


def deliveries(count: int, with_runs: bool) -> list[Delivery]:
    made = []
    for index in range(count):
        handled = with_runs and index % 3 == 0
        kind = "payment_intent.succeeded" if handled else "customer.created"
        event, payload = parse_event(json.dumps(load_event(kind)).encode())
        made.append(to_delivery(f"bench-{index % 4}", event, payload, 0, (HANDLER,) if handled else ()))
    return made


def append_one_per_event(log: EventLog, batch: list[Delivery]) -> None:
    log.batched = False
    log.append(batch)


def append_multi_row(log: EventLog, batch: list[Delivery]) -> None:
    log.batched = True
    log.append(batch)


PATHS = {"one statement per event": append_one_per_event, "one INSERT per batch": append_multi_row}
# SQLite: the multi-row write needs PostgreSQL (see the module doc).
ONE_STATEMENT_ONLY = ("one statement per event",)


def measure(backend: str, size: int, batches: int, repeat: int) -> None:
    with database(backend) as url:
        store = Store(DatabaseConfig(url=url))
        upgrade(store.engine, include_plugins=False)
        log = EventLog(store, runs_of(store))
        # SQLite's batches hold events without handlers, as when both paths ran there: its
        # figures stay comparable with those recorded then.
        with_runs = backend != "sqlite"
        paths = PATHS if backend != "sqlite" else {name: PATHS[name] for name in ONE_STATEMENT_ONLY}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for path in paths.values():  # warm up: statements compiled, caches filled
            for _ in range(20):
                path(log, deliveries(size, with_runs))
        for round_ in range(repeat):
            order = list(paths.items()) if round_ % 2 == 0 else list(paths.items())[::-1]
            for name, path in order:
                prepared = [deliveries(size, with_runs) for _ in range(batches)]
                wall, cpu = time.perf_counter(), time.thread_time()
                for batch in prepared:
                    path(log, batch)
                events = size * batches
                results[name].append(
                    ((time.perf_counter() - wall) / events * 1e6, (time.thread_time() - cpu) / events * 1e6)
                )
        store.dispose()
    for name, samples in results.items():
        walls = [wall for wall, _ in samples]
        cpus = [cpu for _, cpu in samples]
        print(
            f"| {backend} | {size} | {name} | {statistics.median(walls):.0f} ({min(walls):.0f} to "
            f"{max(walls):.0f}) | {statistics.median(cpus):.0f} ({min(cpus):.0f} to {max(cpus):.0f}) |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--batch", default="1,4,16", help="comma-separated batch sizes")
    parser.add_argument("--batches", type=int, default=300, help="batches per measurement")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| backend | batch | path | wall µs/event | cpu µs/event |\n|---|---:|---|---:|---:|")
    for size in (int(size) for size in args.batch.split(",")):
        measure(args.backend, size, args.batches, args.repeat)


if __name__ == "__main__":
    main()
