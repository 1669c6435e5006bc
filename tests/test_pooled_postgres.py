"""PostgreSQL behind a transaction pooler (PgBouncer, pool_mode = transaction), as it is run
at scale: payhook connects, its limits hold in every transaction, no prepared statement is
lost between server connections, and workers wake through `[database] listen_url` (or poll,
and say so).

The pooler is the one at $PAYHOOK_TEST_POSTGRES_POOLED_URL (CI starts PgBouncer from
.ci/pgbouncer.ini); without it these tests skip, unless PostgreSQL is required.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from payhook.config import DatabaseConfig
from payhook.plugins.types import Handler
from payhook.receive.runtime import Payhook
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.eventlog import EventLog
from payhook.store.migrations import upgrade
from payhook.store.runs import runs_of
from payhook.testing import wait_until
from payhook.testing.harness import HarnessFactory
from payhook.testing.postgres import (
    POOLED_URL_ENV,
    postgres_admin_url,
    postgres_database,
    postgres_pooled_url,
    through_pooler,
)
from sqlalchemy import make_url

from .helpers import RecordingPlugin, create_effect_table
from .test_stuck_store import SHORT_TIMEOUT, SLACK, FreezableProxy, through, timed
from .test_writer import delivery

LIMITS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """A fresh database: its URL through the pooler, and its direct URL. Skipped without a
    pooler: the suite's direct run has none; CI's pooled run sets one (.ci/run)."""
    pooled = postgres_pooled_url()
    if pooled is None:
        pytest.skip(f"no pooler to test through: set {POOLED_URL_ENV}")
    with postgres_database(postgres_admin_url()) as direct:
        yield through_pooler(direct, pooled), direct


def shown_limits(fetch: Any) -> set[str]:
    return {fetch(f"SELECT current_setting('{name}')") for name in LIMITS}


def test_the_store_connects_through_the_pooler_with_its_limits_in_every_transaction(
    databases: tuple[str, str],
) -> None:
    pooled, direct = databases
    store = Store(DatabaseConfig(url=pooled), timeout=1.5)
    try:
        store.ping()  # refused before: PgBouncer closes a connection that sends `options`
        assert store.pooling.pooled is True
        with store.transaction() as conn:
            assert shown_limits(lambda sql: conn.exec_driver_sql(sql).scalar()) == {"1500ms"}
        with store.pipelined_transaction() as txn:
            cursor = txn.waiting()

            def fetch(sql: str) -> Any:
                cursor.execute(sql)
                return cursor.fetchone()[0]

            assert shown_limits(fetch) == {"1500ms"}
        with store.statements() as statements:
            cursor = statements.waiting()
            assert shown_limits(fetch) == {"1500ms"}
    finally:
        store.dispose()
    direct_store = Store(DatabaseConfig(url=direct), timeout=1.5)
    try:
        direct_store.ping()
        assert direct_store.pooling.pooled is False  # the limits come with the connection
    finally:
        direct_store.dispose()


def test_a_frozen_backend_behind_the_pooler_fails_the_transaction_within_the_timeout(
    databases: tuple[str, str],
) -> None:
    """The server process behind PgBouncer stops (SIGSTOP) mid-transaction: the pooler is
    alive, the server says nothing, and the transaction still fails by its deadline."""
    pooled, _ = databases
    store = Store(DatabaseConfig(url=pooled), timeout=SHORT_TIMEOUT)
    stopped: list[int] = []

    def freeze_and_wait() -> None:
        with store.transaction() as conn:
            pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            conn.exec_driver_sql("SELECT 1")

    try:
        outcome, seconds = timed(freeze_and_wait)
        assert isinstance(outcome, StoreUnavailable), outcome
        assert outcome.reason == "timeout"
        assert seconds < SHORT_TIMEOUT + SLACK
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        store.dispose()


def test_statements_run_many_times_from_many_connections_never_miss_a_prepared_statement(
    databases: tuple[str, str], stripe_event: Any
) -> None:
    """psycopg prepares a statement on the server once a connection ran it 5 times; through
    a transaction pooler the next run may land on a server connection without it."""
    pooled, _ = databases
    store = Store(DatabaseConfig(url=pooled, pool_size=4), timeout=10)
    upgrade(store.engine, include_plugins=False)
    runs = runs_of(store)
    log = EventLog(store, runs)
    handler = Handler("p", "p.h", "payment_intent.succeeded", lambda event, ctx: None)
    errors: list[BaseException] = []
    succeeded: list[int] = []

    def busy(owner: str) -> None:
        try:
            for _ in range(40):
                batch = [dataclasses.replace(delivery(stripe_event), handlers=(handler,)) for _ in range(3)]
                log.append(batch)
                claimed = runs.claim(owner, 3, 60)
                succeeded.extend(runs.succeed_many([(run, 1.0) for run in claimed]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=busy, args=(f"w{index}",)) for index in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        # Threads claim each other's runs: what is left is claimed here.
        while claimed := runs.claim("last", 100, 60):
            succeeded.extend(runs.succeed_many([(run, 1.0) for run in claimed]))
        assert sorted(succeeded) == list(range(1, 4 * 40 * 3 + 1))
    finally:
        store.dispose()


def worker_config(receiver: Any, **database: str) -> Any:
    config = receiver.config
    return dataclasses.replace(
        config,
        database=dataclasses.replace(config.database, **database),
        processing=dataclasses.replace(config.processing, poll_interval=3600.0),
    )


def run_worker_until_done(config: Any, plugin: RecordingPlugin, receiver: Any, stripe_event: Any) -> None:
    worker = Payhook(config, {"rec": plugin}, run_worker=True)

    async def scenario() -> None:
        await worker.start()
        try:
            await asyncio.to_thread(wait_until, lambda: worker.worker is not None)
            await asyncio.sleep(0.2)  # its first claim found nothing: only a wake-up is left
            await asyncio.to_thread(receiver.deliver, stripe_event("payment_intent.succeeded"))
            await asyncio.to_thread(
                wait_until, lambda: [run.status for run in receiver.runs()] == ["succeeded"], timeout=10
            )
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_worker_wakes_through_listen_url_while_ingest_notifies_through_the_pooler(
    databases: tuple[str, str], stripe_event: Any
) -> None:
    pooled, direct = databases
    factory = HarnessFactory(pooled)
    try:
        plugin = RecordingPlugin("rec")
        receiver = factory({"rec": plugin})
        create_effect_table(receiver.store.engine)
        # An hour-long poll: only a notification can wake the worker in time.
        run_worker_until_done(worker_config(receiver, listen_url=direct), plugin, receiver, stripe_event)
    finally:
        factory.close()


def test_without_listen_url_behind_the_pooler_workers_poll_and_say_so_once(
    databases: tuple[str, str], stripe_event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pooled, _ = databases
    factory = HarnessFactory(pooled)
    try:
        plugin = RecordingPlugin("rec")
        receiver = factory({"rec": plugin})
        create_effect_table(receiver.store.engine)
        config = worker_config(receiver)
        config = dataclasses.replace(
            config, processing=dataclasses.replace(config.processing, poll_interval=0.2)
        )
        worker = Payhook(config, {"rec": plugin}, run_worker=True)

        async def scenario() -> None:
            await worker.start()
            try:
                await asyncio.to_thread(
                    wait_until,
                    lambda: any("no LISTEN" in r.getMessage() for r in caplog.records),
                    timeout=15,
                    what="the notice that workers poll",
                )
                await asyncio.to_thread(receiver.deliver, stripe_event("payment_intent.succeeded"))
                await asyncio.to_thread(
                    wait_until, lambda: [run.status for run in receiver.runs()] == ["succeeded"], timeout=10
                )
            finally:
                await worker.stop()

        with caplog.at_level(logging.WARNING, logger="payhook.worker"):
            asyncio.run(scenario())
        notices = [r.getMessage() for r in caplog.records if "no LISTEN" in r.getMessage()]
        assert len(notices) == 1
        assert "listen_url" in notices[0]
    finally:
        factory.close()


@pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)
def test_healthz_names_the_drivers_message_when_the_store_refuses_connections(
    payhook_database_url: str,
) -> None:
    password = f"pw-{uuid.uuid4().hex}"  # trust authentication: any password connects
    proxy = FreezableProxy(_host_port(payhook_database_url))
    url = make_url(through(proxy, payhook_database_url)).set(password=password)
    factory = HarnessFactory(url.render_as_string(hide_password=False))
    try:
        harness = factory()
        assert harness.client.get("/healthz").status_code == 200
        proxy.close()  # nothing listens there any more: every new connection is refused

        def refused() -> bool:
            answer = harness.client.get("/healthz")
            return answer.status_code == 503 and "refused" in answer.json().get("cause", "")

        wait_until(refused, timeout=15, what="/healthz to name the refused connection")
        answer = harness.client.get("/healthz")
        body = answer.json()
        assert body["error"] == "store_unavailable" and body["detail"] == "OperationalError"
        assert body["cause"].startswith("OperationalError: ")
        assert password not in answer.text
    finally:
        factory.close()
        proxy.close()


def _host_port(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432
