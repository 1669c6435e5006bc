"""The harness: a payhook app over a real store, a client that signs like Stripe, and the
store's rows read back as frozen records (`Run`, `FailedAttempt`), never as the store's own.

`MakePayhook` is the type of the ``make_payhook`` fixture; `HarnessFactory` is what it hands
out. Neither needs pytest: a script can build a harness too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlmodel import Session, col
from sqlmodel import select as sm_select

from payhook.config import Config
from payhook.execute.outcome import RunOutcome
from payhook.ops.replay import ReplaySelection, replay
from payhook.receive.app import PayhookApp, create_app
from payhook.store.engine import Store
from payhook.store.models import Event, HandlerRun, RunFailure
from payhook.store.runs import ClaimedRun
from payhook.testing.failing import fail
from payhook.testing.signing import TEST_SECRET, encode, signed_headers

__all__ = [
    "FailedAttempt",
    "HarnessFactory",
    "MakePayhook",
    "PayhookHarness",
    "Response",
    "Run",
    "build_config",
]

# `process()` stops after this many rounds even if runs keep coming due (a handler that
# always asks to be retried at once would otherwise never let the test end).
MAX_ROUNDS = 100
ROUND_SIZE = 1000


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
            secret = self._thin_secret(slug)
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
        thin: bool = False,
    ) -> list[Run]:
        """Deliver `event`, process what is due, and return the event's runs.

        Fails the test unless payhook answered 200 with the status `expect` (``accepted``
        by default; ``duplicate``, ``ignored``, or None for any). The runs are the
        event's, for this tenant, oldest first: ``[run] = harness.send(event)``.
        `thin=True` sends a thin event notification (`load_thin_event`) as `deliver` does.
        """
        response = self.deliver(event, tenant=tenant, thin=thin)
        assert response.status_code == 200, f"payhook answered {response.status_code}: {response.text}"
        status = response.json()["status"]
        assert expect is None or status == expect, f"expected {expect!r}, payhook answered {status!r}"
        self.process(include_scheduled=include_scheduled)
        return self.runs(event["id"], tenant=tenant or self.tenant)

    def _thin_secret(self, slug: str) -> str | None:
        """The tenant's first thin secret; None for a tenant payhook does not know (a 404)."""
        tenant = self.config.tenants.get(slug)
        if tenant is None:
            return None
        if not tenant.thin_webhook_secrets:
            fail(
                f"tenant {slug!r} has no thin_webhook_secrets to sign a thin event with: give it "
                "some, and a stripe_api_key, in make_payhook(tenants={...})",
                pytrace=False,
            )
        return tenant.thin_webhook_secrets[0]

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


class HarnessFactory:
    """What the ``make_payhook`` fixture hands out (a `MakePayhook`): harnesses over the
    database at `database_url`, each closed by `close()`."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._harnesses: list[PayhookHarness] = []

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
    ) -> PayhookHarness:
        import warnings

        with warnings.catch_warnings():
            # Starlette's TestClient prefers httpx2; payhook (and respx) use httpx.
            warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
            from starlette.testclient import TestClient

        config = build_config(
            self.database_url,
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
        self._harnesses.append(harness)
        return harness

    def close(self) -> None:
        """Close every harness made so far (their clients, and so their apps' lifespans)."""
        while self._harnesses:
            self._harnesses.pop(0).close()
