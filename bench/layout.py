"""The scale-out layout on one fresh PostgreSQL database: receivers and separate workers.

Receivers are `payhook serve` with `[processing] worker = false`; workers are `payhook
worker` processes on the same config, started and stopped by the measurement that needs
them. Everything runs on 127.0.0.1 and is stopped, and the database dropped, on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dbcheck
import servers
from loadgen import Tenant
from sqlalchemy import Engine, text

__all__ = ["PLUGIN", "Layout", "layout"]

PLUGIN = "bench"


@dataclass
class Layout:
    config: Path
    workdir: Path
    engine: Engine
    tenants: Sequence[Tenant]
    ports: list[int]
    receivers: list[servers.Process]
    workers: list[servers.Process] = field(default_factory=list)

    def start_workers(self, count: int, env: Mapping[str, str] | None = None) -> None:
        for _ in range(count):
            name = f"worker-{len(self.workers) + 1}"
            self.workers.append(servers.start_worker(self.config, self.workdir, (PLUGIN,), name, env))

    def check_alive(self) -> None:
        for process in [*self.receivers, *self.workers]:
            process.check_alive()

    def hold_runs(self) -> int:
        """Make every pending run due only far in the future; returns how many there are.

        Preloaded runs are held while the workers start one after another, and released at
        once with `release_runs`, so that no worker gets a head start on the others.
        """
        with self.engine.begin() as conn:
            query = (
                "UPDATE payhook_handler_run SET next_attempt_at = now() + interval '1 day' "
                "WHERE status = 'pending'"
            )
            return int(conn.execute(text(query)).rowcount)

    def release_runs(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE payhook_handler_run SET next_attempt_at = now() WHERE status = 'pending'")
            )


@contextmanager
def layout(
    workdir: Path, tenants: Sequence[Tenant], receivers: int, overrides: Mapping[str, str]
) -> Iterator[Layout]:
    """A fresh database, migrated, with `receivers` receivers answering and no worker yet."""
    workdir.mkdir(parents=True, exist_ok=True)
    with servers.database("postgres") as url:
        config = servers.write_config(
            workdir / "payhook.toml", url, tenants, (PLUGIN,), worker=False, overrides=overrides
        )
        servers.upgrade_database(config, workdir, (PLUGIN,))
        engine = dbcheck.connect(url)
        from payhook_bench import create_tables

        create_tables(engine)  # before the first event reaches a handler
        started = Layout(config, workdir, engine, tenants, [], [])
        try:
            for index in range(receivers):
                port = servers.free_port()
                process = servers.start_server(config, port, workdir, (PLUGIN,), False, f"serve-{index + 1}")
                started.receivers.append(process)
                started.ports.append(port)
            yield started
        finally:
            # Workers first: a receiver's shutdown does not wait for them, and they hold
            # connections the database drop would otherwise have to force.
            for process in reversed([*started.receivers, *started.workers]):
                process.stop()
            engine.dispose()
