"""A store that stops answering: every delivery is answered 503 within the store timeout,
and service comes back by itself once the store answers again.

PostgreSQL is frozen by a TCP proxy that stops forwarding bytes while keeping every
connection open (what a hung server or a silent network looks like to payhook); SQLite by
another process holding the write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from payhook.config import DatabaseConfig, IngestConfig
from payhook.receive.writer import BatchWriter
from payhook.store.engine import Store, StoreUnavailable
from payhook.store.eventlog import EventLog
from payhook.store.migrations import upgrade
from payhook.store.runs import runs_of
from payhook.testing import TEST_SECRET, signed_headers, wait_until
from payhook.testing.samples import load_event
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .processes import payhook_processes
from .test_writer import delivery

postgres_only = pytest.mark.parametrize("payhook_backend", ["postgresql"], indirect=True)

# What `payhook serve` runs with. [ingest] store_timeout reaches the serve process's store
# once the runtime passes it on; until then this must stay the default.
SERVE_STORE_TIMEOUT = IngestConfig().store_timeout
# In-process stores and writers are given a short timeout directly.
SHORT_TIMEOUT = 1.0
# Scheduling on a shared two-core machine: what an answer may take beyond the timeout.
SLACK = 3.0


class FreezableProxy:
    """A TCP proxy on 127.0.0.1 that can stop moving bytes, and start again.

    Frozen, it keeps every connection open and accepts new ones, but reads and forwards
    nothing in either direction: to the client the server looks alive and silent.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._held = 0  # chunks read while frozen, waiting to be forwarded
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def holding(self) -> bool:
        """True once a client sent something the frozen proxy keeps: it is waiting on us."""
        with self._lock:
            return self._held > 0

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        _shut(self._listener)  # wakes accept(); closing alone would not
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _shut(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data or self._closed:
                    break
                if not self._flowing.is_set():
                    with self._lock:
                        self._held += 1
                    self._flowing.wait()
                    with self._lock:
                        self._held -= 1
                target.sendall(data)
        except OSError:
            pass
        finally:
            _shut(source)
            _shut(target)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(payhook_database_url: str) -> Iterator[FreezableProxy]:
    url = make_url(payhook_database_url)
    proxy = FreezableProxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.close()


def through(proxy: FreezableProxy, database_url: str) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """What `call()` returned or raised, and how many seconds it took."""
    started = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:
        outcome = exc
    return outcome, time.monotonic() - started


# -- in-process: the store and the writer, with a short timeout ---------------------------


@postgres_only
def test_a_frozen_postgres_fails_transactions_within_the_timeout(
    payhook_database_url: str, proxy: FreezableProxy
) -> None:
    store = Store(DatabaseConfig(url=through(proxy, payhook_database_url)), timeout=SHORT_TIMEOUT)
    upgrade(store.engine, include_plugins=False)
    runs = runs_of(store)
    try:
        assert runs.claim("me", 10, 60) == []  # a connection in the pool, known good
        proxy.freeze()
        for call in (lambda: runs.claim("me", 10, 60), store.ping, lambda: runs.claim("me", 10, 60)):
            outcome, seconds = timed(call)
            assert isinstance(outcome, StoreUnavailable), outcome
            assert seconds < SHORT_TIMEOUT + SLACK
        proxy.resume()
        # Connections cut by the watchdog were dropped; new ones work.
        wait_until(lambda: timed(store.ping)[0] is None, timeout=20, what="the store to answer again")
        assert runs.claim("me", 10, 60) == []
    finally:
        proxy.resume()
        store.dispose()


@postgres_only
def test_a_frozen_postgres_answers_every_waiting_delivery_503_then_recovers(
    payhook_database_url: str, proxy: FreezableProxy, stripe_event: Any
) -> None:
    store = Store(DatabaseConfig(url=through(proxy, payhook_database_url)), timeout=SHORT_TIMEOUT)
    upgrade(store.engine, include_plugins=False)
    writer = BatchWriter(EventLog(store, runs_of(store)))
    first = delivery(stripe_event)
    queued = [delivery(stripe_event) for _ in range(5)]

    async def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.005)

    async def answer(submitted: Coroutine[Any, Any, Any]) -> tuple[Any, float]:
        started = time.monotonic()
        try:
            outcome = await submitted
        except StoreUnavailable as exc:
            outcome = exc
        return outcome, time.monotonic() - started

    async def scenario() -> tuple[list[tuple[Any, float]], Any, list[Any]]:
        writer.start()
        try:
            assert (await writer.submit(delivery(stripe_event))).status == "ignored"
            proxy.freeze()
            stuck = asyncio.ensure_future(answer(writer.submit(first)))
            await until(proxy.holding, "the writer to wait on the frozen store")
            # Queued behind a transaction that is stuck: each is still answered in time.
            behind = [asyncio.ensure_future(answer(writer.submit(d))) for d in queued]
            answers = [await stuck, *[await future for future in behind]]
            # Still frozen: a delivery now meets a writer stuck again, and is answered too.
            answers.append(await answer(writer.submit(delivery(stripe_event))))
            proxy.resume()
            recovered: Any = None
            deadline = time.monotonic() + 20
            while recovered is None:
                outcome, _ = await answer(writer.submit(delivery(stripe_event)))
                if not isinstance(outcome, StoreUnavailable):
                    recovered = outcome
                assert time.monotonic() < deadline, "the writer never recovered"
            # Stripe retries what was refused: each is stored now, or was by a write that
            # was under way when its answer went out (a late commit: then `duplicate`).
            retried = [await writer.submit(d) for d in [first, *queued]]
            return answers, recovered, retried
        finally:
            proxy.resume()
            await writer.stop()

    answers, recovered, retried = asyncio.run(scenario())
    assert all(isinstance(outcome, StoreUnavailable) for outcome, _ in answers), answers
    assert max(seconds for _, seconds in answers) < SHORT_TIMEOUT + SLACK, answers
    assert recovered.status == "ignored"
    assert {result.status for result in retried} <= {"ignored", "duplicate"}
    assert {d.stripe_event_id for d in [first, *queued]} <= stored_event_ids(payhook_database_url)
    store.dispose()


@postgres_only
def test_postgres_connections_carry_the_server_side_limits(payhook_database_url: str) -> None:
    store = Store(DatabaseConfig(url=payhook_database_url), timeout=1.5)
    with store.transaction() as conn:
        shown = {
            name: conn.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
        keepalives = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert set(shown.values()) == {"1500ms"}
    assert keepalives.get("keepalives") == "1"
    store.dispose()


@postgres_only
def test_a_lock_held_elsewhere_fails_a_postgres_transaction_within_the_timeout(
    payhook_database_url: str,
) -> None:
    store = Store(DatabaseConfig(url=payhook_database_url), timeout=SHORT_TIMEOUT)
    with store.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE held (id INTEGER PRIMARY KEY)")
    holder = create_engine(payhook_database_url)
    try:
        with holder.begin() as other:
            other.execute(text("INSERT INTO held VALUES (1)"))  # uncommitted: the key is locked

            def insert_same_key() -> None:
                with store.transaction() as conn:
                    conn.exec_driver_sql("INSERT INTO held VALUES (1)")

            outcome, seconds = timed(insert_same_key)
            other.rollback()
        assert isinstance(outcome, StoreUnavailable), outcome
        assert seconds < SHORT_TIMEOUT + SLACK
    finally:
        holder.dispose()
        store.dispose()


def stored_event_ids(database_url: str) -> set[str]:
    return set(stored_events(database_url))


def stored_events(database_url: str) -> Counter[str]:
    """How many rows each Stripe event id has in payhook_event."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return Counter(conn.execute(text("SELECT stripe_event_id FROM payhook_event")).scalars())
    finally:
        engine.dispose()


# -- `payhook serve` -----------------------------------------------------------------------


def serve_config(directory: Path, url: str, database: dict[str, Any] | None = None) -> Path:
    lines = [f'[database]\nurl = "{url}"\n']
    lines += [f"{key} = {json.dumps(value)}\n" for key, value in (database or {}).items()]
    lines.append(f"[ingest]\nstore_timeout = {SERVE_STORE_TIMEOUT}\n")
    lines.append("[processing]\nworker = false\n")
    lines.append(f'[tenants.conf]\nwebhook_secrets = ["{TEST_SECRET}"]\nplugins = []\n')
    path = directory / "payhook.toml"
    path.write_text("".join(lines))
    return path


class Sender:
    """Posts signed events to a running `payhook serve` and remembers the last answer to each."""

    def __init__(self, server: str) -> None:
        self.url = f"{server}/conf"
        self.bodies: dict[str, bytes] = {}
        self.answers: dict[str, int] = {}
        self._lock = threading.Lock()

    def post(self, event_id: str | None = None) -> tuple[int, float]:
        """POST a new event, or again the one with `event_id`; (status, seconds)."""
        if event_id is None:
            event = load_event("payment_intent.succeeded")
            event_id, body = event["id"], json.dumps(event).encode()
        else:
            body = self.bodies[event_id]
        started = time.monotonic()
        try:
            status = httpx.post(self.url, content=body, headers=signed_headers(body), timeout=60).status_code
        except httpx.TransportError:
            status = -1
        with self._lock:
            self.bodies[event_id] = body
            self.answers[event_id] = status
        return status, time.monotonic() - started

    def ids(self, status: int) -> set[str]:
        with self._lock:
            return {event_id for event_id, answer in self.answers.items() if answer == status}

    def retry_refused(self) -> None:
        """What Stripe does with every answer but 200: send it again."""
        for event_id in sorted(set(self.answers) - self.ids(200)):
            assert self.post(event_id)[0] == 200, event_id


def stuck_then_recovered(
    sender: Sender,
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    waiting: Callable[[], bool] | None = None,
) -> None:
    """Deliveries while the store is stuck get 503 within the timeout, later ones too; 200 after.

    `waiting` tells when the writer is waiting on the stuck store, if that can be seen.
    """
    assert [sender.post()[0] for _ in range(5)] == [200] * 5
    freeze()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(sender.post)
        if waiting is not None:
            wait_until(waiting, timeout=20, what="the writer to wait on the stuck store")
        # Queued behind the stuck transaction, or in it.
        behind = [pool.submit(sender.post) for _ in range(3)]
        answers = [first.result(), *(future.result() for future in behind)]
        # Still stuck: later deliveries meet a writer that is waiting again.
        answers += list(pool.map(lambda _: sender.post(), range(2)))
    thaw()
    assert [status for status, _ in answers] == [503] * 6, answers
    assert max(seconds for _, seconds in answers) < SERVE_STORE_TIMEOUT + SLACK, answers
    wait_until(lambda: sender.post()[0] == 200, timeout=30, what="a delivery answered 200 again")
    assert [sender.post()[0] for _ in range(5)] == [200] * 5


@postgres_only
def test_payhook_serve_on_a_frozen_postgres(
    tmp_path: Path, payhook_database_url: str, proxy: FreezableProxy
) -> None:
    engine = create_engine(payhook_database_url)
    upgrade(engine, include_plugins=False)
    engine.dispose()
    config = serve_config(tmp_path, through(proxy, payhook_database_url))
    with payhook_processes(config) as processes:
        sender = Sender(processes.serve())
        try:
            stuck_then_recovered(sender, proxy.freeze, proxy.resume, proxy.holding)
        finally:
            proxy.resume()
        refused = sender.ids(503)
        # A refused delivery's write may have been under way, and committed once the store
        # thawed: its retry is then a duplicate. Either way each event ends stored once.
        sender.retry_refused()
    stored = stored_events(payhook_database_url)
    assert set(sender.answers) == set(stored) and set(stored.values()) == {1}
    assert refused and sender.ids(200) == set(sender.answers)


def test_payhook_serve_while_another_process_holds_the_sqlite_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "payhook.db"
    # A lock wait longer than the store timeout: the timeout is what must bound it.
    config = serve_config(tmp_path, f"sqlite:///{path}", {"busy_timeout_ms": 60_000})
    with payhook_processes(config) as processes:
        sender = Sender(processes.serve())
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            stuck_then_recovered(
                sender, lambda: holder.execute("BEGIN IMMEDIATE"), lambda: holder.execute("ROLLBACK")
            )
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
        refused = sender.ids(503)
        # The lock wait comes before any write: nothing refused was stored.
        assert refused.isdisjoint(stored_event_ids(f"sqlite:///{path}"))
        sender.retry_refused()
    stored = stored_events(f"sqlite:///{path}")
    assert set(sender.answers) == set(stored) and set(stored.values()) == {1}
