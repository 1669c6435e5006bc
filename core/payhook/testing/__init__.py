"""Test helpers for payhook and its plugins; an opt-in pytest plugin.

Enable it in a `conftest.py` with ``pytest_plugins = ["payhook.testing"]``. It gives:

* ``make_payhook`` (a `MakePayhook`): an app with a real store, chosen plugins and tenants,
  returned as a `PayhookHarness` whose client signs deliveries the way Stripe does;
* ``stripe_event``: real Stripe payloads (shipped with payhook), each with a fresh id;
* ``payhook_database_url``: a fresh SQLite file, or a fresh PostgreSQL database when the
  test is parametrised with ``"postgresql"`` (see ``store_backends``);
* ``stripe_api``: a respx router for ``https://api.stripe.com``;

and, to call from tests, ``assert_migrations_match(plugin)``, ``wait_until(condition)`` and
``fresh_event_id()``. What the harness reads back from the store comes as frozen dataclasses
(`Run`, `FailedAttempt`), never as the store's own rows.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col
from sqlmodel import select as sm_select

from payhook.config import Config
from payhook.execute.outcome import RunOutcome
from payhook.ops.replay import ReplaySelection, replay
from payhook.plugins.host import ENTRY_POINT_GROUP
from payhook.receive.app import PayhookApp, create_app
from payhook.receive.verification import sign
from payhook.store import migrations
from payhook.store.engine import Store
from payhook.store.models import Event, HandlerRun, RunFailure
from payhook.store.runs import ClaimedRun
from payhook.testing.samples import FIXTURES, fresh_event_id, load_event

__all__ = [
    "FIXTURES",
    "POSTGRES_URL_ENV",
    "REQUIRE_POSTGRES_ENV",
    "ClaimedRun",
    "FailedAttempt",
    "MakePayhook",
    "PayhookHarness",
    "Run",
    "RunOutcome",
    "assert_migrations_match",
    "fresh_event_id",
    "load_event",
    "postgres_admin_url",
    "postgres_database",
    "postgres_problem",
    "signed_headers",
    "store_backends",
    "wait_until",
]

POSTGRES_URL_ENV = "PAYHOOK_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PAYHOOK_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_SECRET = "whsec_payhook_test_secret"
# `process()` stops after this many rounds even if runs keep coming due (a handler that
# always asks to be retried at once would otherwise never let the test end).
MAX_ROUNDS = 100
ROUND_SIZE = 1000


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


# -- what the store holds, as tests see it ------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One handler run (a row of `payhook_handler_run`), with its event's id and tenant.

    `status` is `pending`, `running`, `succeeded`, `skipped`, `failed` or `dead`;
    `last_error` says why a run failed, died or was skipped.
    """

    id: int
    event_id: int
    stripe_event_id: str
    tenant: str
    plugin: str
    handler: str
    status: str
    attempts: int
    attempt_base: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_token: str | None
    lease_expires_at: datetime | None
    last_error_type: str | None
    last_error: str | None
    last_traceback: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    replay_count: int
    replayed_at: datetime | None
    replayed_by: str | None


@dataclass(frozen=True)
class FailedAttempt:
    """One failed attempt of a run (a row of `payhook_run_failure`)."""

    id: int
    run_id: int
    attempt: int
    error_type: str
    message: str
    traceback: str
    failed_at: datetime


_RUN_COLUMNS = [item.name for item in fields(Run) if item.name not in ("stripe_event_id", "tenant")]
_FAILURE_COLUMNS = [item.name for item in fields(FailedAttempt)]
_RUN = HandlerRun.__table__  # type: ignore[attr-defined]
_EVENT = Event.__table__  # type: ignore[attr-defined]
_FAILURE = RunFailure.__table__  # type: ignore[attr-defined]


class Response(Protocol):
    """What `deliver` returns: the test client's answer (an httpx.Response)."""

    status_code: int
    text: str

    def json(self) -> Any: ...


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

    # -- delivering and processing -------------------------------------------------------

    def deliver(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        tenant: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
        thin: bool = False,
    ) -> Response:
        """POST `event` to the tenant's endpoint, signed like Stripe signs it.

        The answer's ``.json()["status"]`` is ``accepted``, ``duplicate`` or ``ignored``.
        `thin=True` posts a thin event to ``/<tenant>/thin``, signed with the tenant's first
        `thin_webhook_secrets` unless `secret` is given.
        """
        slug = tenant or self.tenant
        if thin and secret is None:
            secret = self.config.tenants[slug].thin_webhook_secrets[0]
        body = encode(event)
        all_headers = signed_headers(body, secret or self.secret, timestamp)
        all_headers.update(headers or {})
        path = f"/{slug}/thin" if thin else f"/{slug}"
        response: Response = self.client.post(path, content=body, headers=all_headers)
        return response

    def send(
        self,
        event: Mapping[str, Any],
        *,
        tenant: str | None = None,
        expect: str | None = "accepted",
        include_scheduled: bool = False,
    ) -> list[Run]:
        """Deliver `event`, process what is due, and return the event's runs.

        Fails the test unless payhook answered 200 with the status `expect` (``accepted``
        by default; ``duplicate``, ``ignored``, or None for any). The runs are the
        event's, for this tenant, oldest first: ``[run] = harness.send(event)``.
        """
        response = self.deliver(event, tenant=tenant)
        assert response.status_code == 200, f"payhook answered {response.status_code}: {response.text}"
        status = response.json()["status"]
        assert expect is None or status == expect, f"expected {expect!r}, payhook answered {status!r}"
        self.process(include_scheduled=include_scheduled)
        return self.runs(event["id"], tenant=tenant or self.tenant)

    def process(self, *, include_scheduled: bool = False, rounds: int | None = None) -> list[RunOutcome]:
        """Run due handler runs now, in this thread; returns their outcomes, in order.

        A round runs every run that is due once. Rounds repeat until nothing is due, or
        `rounds` times. `include_scheduled` makes retries due before each round, whatever
        their backoff: ``process(include_scheduled=True)`` retries failing runs until
        they succeed or are dead, ``process(include_scheduled=True, rounds=1)`` gives each
        exactly one more attempt.
        """
        processor = self.app.payhook.processor
        outcomes: list[RunOutcome] = []
        for _ in range(MAX_ROUNDS if rounds is None else rounds):
            if include_scheduled:
                self.make_retries_due()
            claimed = processor.claim(ROUND_SIZE)
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
        replayed = set(result.run_ids)
        event_ids = sorted({run.event_id for run in self.runs() if run.id in replayed})
        return [processor.execute(run) for event_id in event_ids for run in processor.claim(100, event_id)]

    def claim(self, stripe_event_id: str, *, tenant: str | None = None) -> list[ClaimedRun]:
        """Claim the event's waiting runs, as a worker would, without running them yet.

        With `execute`, for tests that decide when (and in which thread) each run runs.
        """
        event_ids = sorted({run.event_id for run in self.runs(stripe_event_id, tenant=tenant)})
        processor = self.app.payhook.processor
        return [run for event_id in event_ids for run in processor.claim(100, event_id)]

    def execute(self, run: ClaimedRun) -> RunOutcome:
        """Execute a run `claim` returned (this harness's app may claim another's runs)."""
        return self.app.payhook.processor.execute(run)

    def make_retries_due(self) -> None:
        with self.store.transaction() as conn:
            self.app.payhook.runs.retry_now(conn)

    # -- reading the store ---------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session of its own on the store, for reading (and writing) plugin tables."""
        with Session(self.store.engine) as session:
            yield session

    def events(self) -> list[Event]:
        """Stored events (`payhook_event` rows, detached), oldest first."""
        with self.session() as session:
            return list(session.exec(sm_select(Event).order_by(col(Event.id))))

    def runs(self, stripe_event_id: str | None = None, *, tenant: str | None = None) -> list[Run]:
        """Handler runs, oldest first: every run, or one event's (of `tenant`, if given)."""
        query = select(*(_RUN.c[name] for name in _RUN_COLUMNS), _EVENT.c.stripe_event_id, _EVENT.c.tenant)
        query = query.join(_EVENT, _EVENT.c.id == _RUN.c.event_id).order_by(_RUN.c.id)
        if stripe_event_id is not None:
            query = query.where(_EVENT.c.stripe_event_id == stripe_event_id)
        if tenant is not None:
            query = query.where(_EVENT.c.tenant == tenant)
        with self.store.engine.connect() as conn:
            return [Run(**row._asdict()) for row in conn.execute(query)]

    def failures(self, stripe_event_id: str | None = None) -> list[FailedAttempt]:
        """Failed attempts, oldest first: all of them, or those of one event's runs."""
        query = select(*(_FAILURE.c[name] for name in _FAILURE_COLUMNS)).order_by(_FAILURE.c.id)
        if stripe_event_id is not None:
            query = (
                query.join(_RUN, _RUN.c.id == _FAILURE.c.run_id)
                .join(_EVENT, _EVENT.c.id == _RUN.c.event_id)
                .where(_EVENT.c.stripe_event_id == stripe_event_id)
            )
        with self.store.engine.connect() as conn:
            return [FailedAttempt(**row._asdict()) for row in conn.execute(query)]

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


class MakePayhook(Protocol):
    """The ``make_payhook`` fixture: ``make_payhook({"badges": payhook_badges})``.

    `plugins` maps plugin names to plugin objects (a module, or an instance with
    `@hookimpl` methods). Without `tenants`, one tenant ``"test"`` enables all of them;
    `tenants` maps slugs to tenant tables as in the TOML file (``{"plugins": [...],
    "plugin_config": {...}}``; secrets are filled in). `processing`, `ingest` and
    `database` are those sections. `discover=True` loads the installed plugins instead of
    `plugins`. A configuration payhook refuses raises `payhook.ConfigError`, as it would
    at start. The worker does not run by itself: call ``harness.process()`` (or pass
    ``processing={"worker": True}``).
    """

    def __call__(
        self,
        plugins: Mapping[str, object] | None = None,
        *,
        tenants: Mapping[str, Mapping[str, Any]] | None = None,
        processing: Mapping[str, Any] | None = None,
        ingest: Mapping[str, Any] | None = None,
        database: Mapping[str, Any] | None = None,
        secret: str = TEST_SECRET,
        discover: bool = False,
    ) -> PayhookHarness: ...


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


# -- migrations -------------------------------------------------------------------------


def assert_migrations_match(plugin: str, database_url: str | None = None) -> None:
    """Fail unless the plugin's Alembic branch creates exactly the tables of its models.

    Migrates an empty database (`database_url`, or a throwaway SQLite file) with the core's
    branch and every installed plugin's, as `payhook db upgrade` does, then compares the
    tables named ``<plugin>_...`` with the SQLModel tables of those names, using alembic's
    `compare_metadata`: tables, columns, types, nullability, indexes, unique constraints.
    The plugin must be installed (its `payhook` and `payhook.migrations` entry points), its
    branch labelled with its name, and its models imported by its package.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlmodel import SQLModel

    prefix = plugin.replace("-", "_") + "_"
    _load_entry_point(ENTRY_POINT_GROUP, plugin)  # imports the package, and with it its models
    _load_entry_point(migrations.MIGRATIONS_ENTRY_POINTS, plugin)
    if not any(name.startswith(prefix) for name in SQLModel.metadata.tables):
        pytest.fail(
            f"no SQLModel table is named {prefix}...: name plugin {plugin!r}'s tables so, and "
            "import its models from its package",
            pytrace=False,
        )

    def is_the_plugins(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return bool(table and table != migrations.VERSION_TABLE and table.startswith(prefix))

    with _empty_database(database_url) as url:
        engine = create_engine(url)
        try:
            migrations.upgrade(engine)
            locations = migrations.plugin_version_locations()
            script = ScriptDirectory.from_config(migrations.alembic_config(engine, locations))
            try:
                branch_heads = {revision.revision for revision in script.get_revisions(f"{plugin}@head")}
            except Exception as exc:  # alembic raises several kinds for an unknown label
                pytest.fail(
                    f"no Alembic branch labelled {plugin!r} ({exc}); give the first revision "
                    f"branch_labels = ({plugin!r},)",
                    pytrace=False,
                )
            with engine.connect() as conn:
                applied = set(MigrationContext.configure(conn, opts=_VERSION_OPTS).get_current_heads())
                context = MigrationContext.configure(
                    conn, opts={"compare_type": True, "include_object": is_the_plugins}
                )
                drift = compare_metadata(context, SQLModel.metadata)
        finally:
            engine.dispose()
    assert branch_heads <= applied, (
        f"{plugin}'s head {sorted(branch_heads)} was not applied: {sorted(applied)}"
    )
    # alembic names each difference as the change the database would need: add_* is in the
    # models only, remove_* in the migrations only, modify_* differs between the two.
    assert drift == [], f"plugin {plugin!r}: its migrations and its models differ: {drift}"


_VERSION_OPTS = {"version_table": migrations.VERSION_TABLE}


def _load_entry_point(group: str, name: str) -> Any:
    found = entry_points(group=group, name=name)
    if not found:
        pytest.fail(
            f"no {group!r} entry point named {name!r}: is the plugin installed "
            "(pip install -e .) and does its pyproject.toml declare it?",
            pytrace=False,
        )
    return next(iter(found)).load()


@contextmanager
def _empty_database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="payhook-migrations-") as folder:
        yield f"sqlite:///{Path(folder) / 'payhook.db'}"


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
def make_payhook(payhook_database_url: str) -> Iterator[MakePayhook]:
    """Factory of apps over a fresh, migrated store: see `MakePayhook` for its arguments."""
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
