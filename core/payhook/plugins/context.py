"""What a handler gets besides the event: its session, tenant, config and helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from sqlmodel import Session

from payhook.config import TenantConfig
from payhook.store.runs import newer_event_applied
from payhook.stripe_api.fetch import AttemptAnswers, Replaying

if TYPE_CHECKING:
    import stripe
    from stripe import StripeObject

    from payhook.store.compiled import Executor, Statement
    from payhook.store.engine import HandlerTransaction
    from payhook.store.runs import Runs
    from payhook.stripe_api.clients import StripeClients

__all__ = ["GiveUp", "HandlerContext", "RetryLater", "Skip"]


class RetryLater(Exception):
    """Raise from a handler to roll back and try again after `delay` seconds."""

    def __init__(self, reason: str = "handler asked to retry later", *, delay: float = 60.0) -> None:
        self.reason = reason
        self.delay = delay
        super().__init__(reason)


class GiveUp(Exception):
    """Raise from a handler to roll back and mark the run dead at once, with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Skip(Exception):
    """Raise from a handler when the event needs nothing from it (say, no order id).

    The handler's writes are rolled back and the run is marked `skipped`, with `reason`
    kept in `last_error`: a decision, recorded, not an error to retry.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class HandlerContext:
    """Everything a handler may use besides the event.

    `session` is opened on first use and committed by the core with the run's success mark;
    a handler that never touches it costs the store nothing but that mark.
    """

    __slots__ = (
        "_after_commit",
        "_answers",
        "_lease_token",
        "_runs",
        "_settings_of",
        "_sql",
        "_stripe_clients",
        "_transaction",
        "attempt",
        "config",
        "event",
        "event_id",
        "hook",
        "is_replay",
        "logger",
        "plugin",
        "run_id",
        "tenant",
    )

    def __init__(
        self,
        *,
        tenant: TenantConfig,
        plugin: str,
        config: Mapping[str, Any],
        logger: logging.LoggerAdapter[logging.Logger],
        hook: Any,
        settings_of: Callable[[], Any],
        run_id: int,
        attempt: int,
        event_id: int,
        is_replay: bool,
        transaction: HandlerTransaction,
        runs: Runs,
        lease_token: str,
        stripe_clients: StripeClients | None = None,
        event: Any = None,
        answers: AttemptAnswers | None = None,
    ) -> None:
        self.tenant = tenant
        self.plugin = plugin
        self.config = config
        self.logger = logger
        # Hook callers that reach only the plugins this tenant enabled.
        self.hook = hook
        self._settings_of = settings_of
        self.run_id = run_id
        # 1 on the first try; counts every try of this run, replays included.
        self.attempt = attempt
        self.event_id = event_id
        # True when an operator replayed this run (`payhook runs replay`, the status page); a
        # redelivery that re-arms a dead run is not a replay.
        self.is_replay = is_replay
        self._transaction = transaction
        self._runs = runs
        self._lease_token = lease_token
        self._stripe_clients = stripe_clients
        # This attempt's answers from Stripe, when it may be run again (SQLite, see `stripe`).
        self._answers = answers
        # The event this run handles (the handler's first argument), once it is parsed.
        self.event = event
        self._after_commit: list[Callable[[], Any]] = []
        self._sql: Executor | None = None

    def __repr__(self) -> str:
        return f"HandlerContext(tenant={self.tenant.slug!r}, plugin={self.plugin!r}, run_id={self.run_id})"

    @property
    def settings(self) -> Any:
        """This plugin's settings for the tenant: an instance of the class its
        `plugin_settings` hook returns, read from `config` and checked at start (None when
        the plugin declares no settings)."""
        return self._settings_of()

    @property
    def stripe(self) -> stripe.StripeClient:
        """This tenant's Stripe client: its `stripe_api_key`, its `stripe_account`.

        Raises NoStripeKey, naming the key to set, when the tenant has no API key.

        On SQLite a handler that read, then lost the race to write, runs again in the same
        attempt: its calls through this client then get the answers the first run got
        instead of going to Stripe again.
        """
        client = self._clients().for_tenant(self.tenant)
        if self._answers is None:
            return client
        return cast("stripe.StripeClient", Replaying(client, self._answers))

    def fetch_latest(self) -> StripeObject:
        """The event's `data.object` as Stripe has it now, retrieved with the tenant's client.

        An event is a snapshot taken when it happened; a handler that acts on the object's
        current state (a retried run, an out-of-order delivery) asks for it here. Identical
        requests in flight share one call, and each tenant's calls are rate limited.

        It is the SDK's object of its class (a `stripe.PaymentIntent` for a payment intent:
        narrow it with `isinstance` for typed attributes), not a dict: read `obj.status` or
        `obj["status"]`; `obj.to_dict()` gives a plain dict, with `.get`.
        """
        obj = getattr(getattr(self.event, "data", None), "object", None)
        url = getattr(obj, "instance_url", None)
        if url is None:
            raise ValueError("this event has no data.object that can be retrieved from the API")
        clients, path = self._clients(), url()
        if self._answers is None:
            return clients.retrieve(self.tenant, path)
        # A re-run of this attempt (see `stripe`) gets the first run's answer.
        return self._answers.call(("fetch_latest", path), lambda: clients.retrieve(self.tenant, path))

    def _clients(self) -> StripeClients:
        if self._stripe_clients is None:
            # A context built by hand (a plugin's own unit test) has no registry to ask.
            from payhook.config import StripeConfig
            from payhook.stripe_api.clients import StripeClients

            self._stripe_clients = StripeClients(StripeConfig())
        return self._stripe_clients

    @property
    def session(self) -> Session:
        """This run's open session; the core commits it, never the handler."""
        return self._transaction.session

    def execute(self, statement: Statement, /, **params: Any) -> Any:
        """Run a `payhook.sql.Statement` in this run's transaction, with `params` by name.

        Returns the driver's cursor (`fetchall()`, `description`, `rowcount`; values as the
        driver gives them). The work commits with the run's success mark and is rolled back
        if the handler raises, as `session`'s; see docs/hooks.md for the rules.
        """
        sql = self._sql
        if sql is None:
            sql = self._sql = self._transaction.executor()
        return sql.execute(statement, params)

    def rows(self, statement: Statement, /, **params: Any) -> list[Any]:
        """`execute`, then every row, its values converted as the ORM would (say, Decimals)."""
        sql = self._sql
        if sql is None:
            sql = self._sql = self._transaction.executor()
        return sql.rows(statement, params)

    def changed(self, statement: Statement, /, **params: Any) -> int:
        """`execute`; how many rows it changed (the cursor's rowcount)."""
        sql = self._sql
        if sql is None:
            sql = self._sql = self._transaction.executor()
        return sql.changed(statement, params)

    def lock_for_write(self) -> None:
        """Take the database's write lock for this run's transaction now, before reading.

        SQLite takes it at a transaction's first write; a handler that read first and lost
        the race to write is run once more. Call this first to decide on data nobody can
        change before the commit. On PostgreSQL it does nothing: lock the rows you read
        (`SELECT ... FOR UPDATE`).
        """
        self._transaction.lock_for_write()

    @property
    def after_commit_queue(self) -> list[Callable[[], Any]]:
        """What `after_commit` queued, in order: the core runs it once the run committed."""
        return self._after_commit

    def after_commit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Call `func(*args, **kwargs)` once this handler's transaction has committed.

        Nothing registered here runs if the handler fails or its lease was lost.
        """
        self._after_commit.append(lambda: func(*args, **kwargs))

    def extend_lease(self, seconds: float) -> bool:
        """Keep this run claimed for `seconds` more; False if the lease was already lost."""
        if self._transaction.hold_write_lock():
            # SQLite, with this run's transaction under way: a separate commit would make
            # its reads stale. It holds the write lock instead, and a claim needs that lock:
            # nobody can take this run over until it ends.
            return True
        return self._runs.extend_lease(self.run_id, self._lease_token, seconds)

    def newer_event_applied(self) -> bool:
        """True when an event created later about the same object was already handled
        successfully by this plugin (so an out-of-order delivery can be skipped)."""
        return newer_event_applied(self.session, self.event_id, self.plugin)
