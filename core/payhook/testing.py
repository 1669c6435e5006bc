"""Test helpers for payhook and its plugins; an opt-in pytest plugin.

Enable it in a `conftest.py` with ``pytest_plugins = ["payhook.testing"]``. It gives:

* ``stripe_event``: real Stripe payloads (shipped with payhook), each with a fresh id;
* ``make_payhook``: an app with a real store, chosen plugins and tenants, and a client
  that signs deliveries the way Stripe does;
* ``payhook_database_url``: a fresh SQLite file, or a fresh PostgreSQL database when the
  test is parametrised with ``"postgresql"`` (see ``store_backends``);
* ``stripe_api``: a respx router for ``https://api.stripe.com``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col
from sqlmodel import select as sm_select

from .app import PayhookApp, create_app
from .config import Config
from .models import Event, HandlerRun, RunFailure
from .processing import RunOutcome
from .replay import ReplaySelection, replay
from .samples import FIXTURES, fresh_event_id, load_event
from .store import Store
from .verification import sign

__all__ = [
    "FIXTURES",
    "POSTGRES_URL_ENV",
    "REQUIRE_POSTGRES_ENV",
    "PayhookHarness",
    "fresh_event_id",
    "load_event",
    "postgres_database",
    "signed_headers",
    "wait_until",
]

POSTGRES_URL_ENV = "PAYHOOK_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PAYHOOK_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_SECRET = "whsec_payhook_test_secret"


def wait_until(
    condition: Callable[[], object], *, timeout: float = 30.0, what: str = "the condition"
) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds.

    For states reached in other threads or processes (a worker finishing a run, an observer
    called after the answer): tests wait on states, never on fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.005)


def signed_headers(body: bytes, secret: str = TEST_SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def encode(event: Mapping[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


@dataclass
class PayhookHarness:
    """An app over a real store, a client for it, and handles on what it stored."""

    app: PayhookApp
    client: Any  # starlette.testclient.TestClient
    secret: str
    tenant: str
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.app.payhook.store

    @property
    def config(self) -> Config:
        return self.app.payhook.config

    def deliver(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        tenant: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST `event` to the tenant's endpoint, signed like Stripe signs it."""
        body = encode(event)
        all_headers = signed_headers(body, secret or self.secret, timestamp)
        all_headers.update(headers or {})
        return self.client.post(f"/{tenant or self.tenant}", content=body, headers=all_headers)

    def process(self, *, include_scheduled: bool = False, limit: int = 100) -> list[RunOutcome]:
        """Run every due handler run now, in this thread; returns their outcomes.

        `include_scheduled` also runs retries whose backoff has not elapsed yet; `limit`
        bounds the rounds of claiming (``limit=1`` with it makes exactly one more attempt).
        """
        processor = self.app.payhook.processor
        outcomes: list[RunOutcome] = []
        for _ in range(limit):
            if include_scheduled:
                self.make_retries_due()
            claimed = processor.claim(50)
            if not claimed:
                break
            outcomes.extend(processor.execute(run) for run in claimed)
        return outcomes

    def rerun(
        self, stripe_event_id: str, *, tenant: str | None = None, plugin: str | None = None
    ) -> list[RunOutcome]:
        """Run an event's handlers again, succeeded ones included, as an operator's replay
        would: the way to prove a handler is idempotent. Only that event's runs execute; give
        `tenant` when several tenants received the same event id."""
        result = replay(
            self.store,
            ReplaySelection(stripe_event_id=stripe_event_id, tenant=tenant, plugin=plugin),
            requested_by="payhook.testing",
            only_failed=False,
        )
        processor = self.app.payhook.processor
        event_ids = {run.event_id for run in self.runs() if run.id in set(result.run_ids)}
        return [processor.execute(run) for event_id in event_ids for run in processor.claim(100, event_id)]

    def make_retries_due(self) -> None:
        with self.store.transaction() as conn:
            self.app.payhook.runs.retry_now(conn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.store.engine) as session:
            yield session

    def events(self) -> list[Event]:
        with self.session() as session:
            return list(session.exec(sm_select(Event).order_by(col(Event.id))))

    def runs(self, stripe_event_id: str | None = None) -> list[HandlerRun]:
        query = sm_select(HandlerRun).order_by(col(HandlerRun.id))
        if stripe_event_id is not None:
            query = query.join(Event).where(Event.stripe_event_id == stripe_event_id)
        with self.session() as session:
            return list(session.exec(query))

    def failures(self) -> list[RunFailure]:
        with self.session() as session:
            return list(session.exec(sm_select(RunFailure).order_by(col(RunFailure.id))))

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def build_config(
    database_url: str,
    *,
    tenants: Mapping[str, Mapping[str, Any]] | None = None,
    plugins: Mapping[str, object] | None = None,
    secret: str = TEST_SECRET,
    processing: Mapping[str, Any] | None = None,
    ingest: Mapping[str, Any] | None = None,
    database: Mapping[str, Any] | None = None,
) -> Config:
    if tenants is None:
        tenants = {"test": {"plugins": list(plugins or {})}}
    tenant_tables = {slug: {"webhook_secrets": [secret], **dict(body)} for slug, body in tenants.items()}
    return Config.from_mapping(
        {
            "database": {"url": database_url, **dict(database or {})},
            "processing": {"worker": False, "poll_interval": 0.05, **dict(processing or {})},
            "ingest": dict(ingest or {}),
            "tenants": tenant_tables,
        },
        source="<test config>",
    )


# -- PostgreSQL provisioning -------------------------------------------------------------


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES_ENV, "") not in ("", "0", "false", "no")


def postgres_problem(admin_url: str) -> str | None:
    """None if PostgreSQL answers at `admin_url`, else why not."""
    try:
        engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, and drop it afterwards."""
    name = f"payhook_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_postgres_status: dict[str, str | None] = {}


def _postgres_available() -> str | None:
    url = postgres_admin_url()
    if url not in _postgres_status:
        _postgres_status[url] = postgres_problem(url)
    return _postgres_status[url]


# -- pytest fixtures ---------------------------------------------------------------------

store_backends = pytest.mark.parametrize("payhook_backend", ["sqlite", "postgresql"], indirect=True)
"""Decorate a test with this to run it on SQLite and on PostgreSQL."""


@pytest.fixture
def payhook_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def payhook_database_url(payhook_backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the backend the test asked for."""
    if payhook_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'payhook.db'}"
        return
    problem = _postgres_available()
    if problem is not None:
        message = f"PostgreSQL unreachable at {postgres_admin_url()} ({problem})"
        if postgres_required():
            pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set", pytrace=False)
        pytest.skip(message)
    with postgres_database(postgres_admin_url()) as url:
        yield url


@pytest.fixture
def stripe_event() -> Callable[..., dict[str, Any]]:
    """`stripe_event("charge.refunded.full", data__object__metadata={...})`"""
    return load_event


@pytest.fixture
def make_payhook(payhook_database_url: str) -> Iterator[Callable[..., PayhookHarness]]:
    """Factory: ``make_payhook(plugins={"name": plugin}, tenants={...}, processing={...})``.

    The worker does not run by itself; call ``harness.process()`` to run due handlers.
    Pass ``processing={"worker": True}`` to start the in-process worker instead.
    """
    import warnings

    with warnings.catch_warnings():
        # Starlette's TestClient prefers httpx2; payhook (and respx) use httpx.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    harnesses: list[PayhookHarness] = []

    def factory(
        plugins: Mapping[str, object] | None = None,
        *,
        tenants: Mapping[str, Mapping[str, Any]] | None = None,
        processing: Mapping[str, Any] | None = None,
        ingest: Mapping[str, Any] | None = None,
        database: Mapping[str, Any] | None = None,
        secret: str = TEST_SECRET,
        discover: bool = False,
    ) -> PayhookHarness:
        config = build_config(
            payhook_database_url,
            tenants=tenants,
            plugins=plugins,
            secret=secret,
            processing=processing,
            ingest=ingest,
            database=database,
        )
        app = create_app(config, None if discover else dict(plugins or {}), migrate=True)
        client = TestClient(app)
        client.__enter__()
        harness = PayhookHarness(app, client, secret, next(iter(config.tenants), "test"))
        harness._closers.append(lambda: client.__exit__(None, None, None))
        harnesses.append(harness)
        return harness

    yield factory
    for harness in harnesses:
        harness.close()


@pytest.fixture
def stripe_api() -> Iterator[Any]:
    """A respx router that answers for ``https://api.stripe.com``; unmatched calls fail."""
    import respx

    with respx.mock(base_url="https://api.stripe.com", assert_all_called=False) as router:
        yield router


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for url, problem in _postgres_status.items():
        if problem is not None:
            terminalreporter.write_line(
                f"payhook: PostgreSQL store tests were SKIPPED: unreachable at {url} ({problem}). "
                f"Set {POSTGRES_URL_ENV} to test against PostgreSQL.",
                yellow=True,
                bold=True,
            )
