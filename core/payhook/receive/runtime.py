"""The runtime behind the app: store, plugins, ingest writer and an optional worker."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import DBAPIError

from payhook.config import Config, TenantConfig
from payhook.execute.outcome import Outcome
from payhook.execute.processing import Processor
from payhook.execute.worker import Worker
from payhook.plugins.host import PluginHost
from payhook.plugins.types import StoredEvent
from payhook.receive.writer import BatchWriter
from payhook.store import migrations
from payhook.store.engine import Store
from payhook.store.eventlog import Delivery, EventLog, IngestResult
from payhook.store.runs import ClaimedRun, Lease, runs_of
from payhook.store.wakeups import listener_for

__all__ = ["Payhook"]

log = logging.getLogger("payhook")

# A receiver that stored a delivery this recently is busy (see Payhook.receiver_busy).
RECEIVER_QUIET = 0.003


class Payhook:
    """Everything one receiver (or worker) process runs; start and stop it as often as needed."""

    def __init__(
        self,
        config: Config,
        plugins: Mapping[str, object] | None = None,
        *,
        store: Store | None = None,
        migrate: bool = False,
        run_worker: bool | None = None,
    ) -> None:
        self.config = config
        self.plugins = PluginHost(plugins)
        self.plugins.check_config(config)
        self.store = store or Store(config.database, min_pool_size=config.processing.concurrency + 4)
        if migrate:
            migrations.upgrade(self.store.engine)
        self.runs = runs_of(self.store)
        self.processor = Processor(config, self.store, self.plugins, self.runs)
        self.writer = BatchWriter(EventLog(self.store, self.runs))
        self.run_worker = config.processing.worker if run_worker is None else run_worker
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._observers: ThreadPoolExecutor | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        # Only deliveries to a tenant that enabled an `event_stored` observer are handed to the
        # observers' thread: an installed plugin no tenant enables costs nothing per delivery.
        self._observed_tenants = frozenset(
            name
            for name, tenant in config.tenants.items()
            if self.plugins.hooks_for(tenant).event_stored.get_hookimpls()
        )
        # Set by create_app: this runtime answers deliveries (the `payhook worker` one does not).
        self.receives = False
        self._last_delivery = 0.0
        self._schema_current = False

    async def store_delivery(self, delivery: Delivery) -> IngestResult:
        """Store one verified delivery (durable when this returns)."""
        self._last_delivery = time.monotonic()
        return await self.writer.submit(delivery)

    def receiver_busy(self) -> float:
        """Seconds an in-process handler run should wait: deliveries are arriving now.

        Runs and deliveries share this process's CPU (and its GIL); a delivery answered a
        few milliseconds late can make Stripe retry, a run started a few milliseconds late
        costs nothing. The worker bounds the wait, so runs still drain under steady load.
        """
        return RECEIVER_QUIET if time.monotonic() - self._last_delivery < RECEIVER_QUIET else 0.0

    async def ensure_started(self) -> None:
        """Start on first use when nobody ran the lifespan (a mounted app, say)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.start()

    def schema_problem(self) -> str | None:
        """What the database's schema lacks, said with what to run; None once it is current.

        Checked until found current, then never again. A store that cannot be reached now
        gives None too: that is store_unavailable's to say, and passes by itself.
        """
        if self._schema_current:
            return None
        try:
            # An installed plugin no tenant enables needs no tables of its own yet.
            missing = migrations.missing_heads(self.store.engine, self.config.enabled_plugins)
        except (DBAPIError, OSError) as exc:
            log.warning("could not check the database schema (%s); checking again later", type(exc).__name__)
            return None
        if missing:
            return (
                f"the database schema is not migrated (it lacks {', '.join(missing)}): "
                f"{migrations.NOT_MIGRATED}"
            )
        self._schema_current = True
        return None

    async def start(self) -> None:
        """Start the writer (and the worker); SchemaNotMigrated when the database is behind."""
        if self._started:
            return
        # Refused rather than started: every delivery would be a 503 and every run would fail.
        problem = await asyncio.get_running_loop().run_in_executor(None, self.schema_problem)
        if problem is not None:
            log.error("payhook cannot start: %s", problem)
            raise migrations.SchemaNotMigrated(problem)
        self.plugins.hook.startup(host=self.plugins)
        self.store.start_maintenance()
        self.writer.start()
        if self._observed_tenants:
            # event_stored observers run here, in order, off the event loop.
            self._observers = ThreadPoolExecutor(1, thread_name_prefix="payhook-observers")
        if self.run_worker:
            processing = self.config.processing
            self.worker = Worker(
                self.processor,
                concurrency=processing.concurrency,
                batch_size=processing.batch_size,
                poll_interval=processing.poll_interval,
                listen=None if self.store.is_sqlite else listener_for(self.store.config),
                # Beside a receiver, answering Stripe comes first (see receiver_busy).
                pause=self.receiver_busy if self.receives else None,
            )
            self._worker_task = asyncio.create_task(self.worker.run(), name="payhook-worker")
        self._started = True
        log.info(
            "payhook started: %d tenants (%s); handler runs: %s",
            len(self.config.tenants),
            "; ".join(
                f"{tenant.slug}: {', '.join(tenant.plugins) or 'no plugins'}"
                for tenant in self.config.tenants.values()
            )
            or "none",
            # Said the same way by `serve` and by `payhook worker` (which is nobody's "worker
            # in-process"): whether this process executes handler runs.
            "executed by this process" if self.run_worker else "left to `payhook worker` processes",
        )

    async def stop(self, grace: float = 30.0) -> int:
        """Drain the ingest writer, stop the worker; returns how many runs were handed back."""
        if not self._started:
            return 0
        await self.writer.stop()
        abandoned = 0
        if self.worker is not None and self._worker_task is not None:
            abandoned = await self.worker.stop(grace)
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self.worker = self._worker_task = None
        if self._observers is not None:
            self._observers.shutdown(wait=True)
            self._observers = None
        self._started = False
        self.processor.stripe_clients.close()
        self.store.dispose()
        return abandoned

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def event_stored(self, result: IngestResult, delivery: Delivery, tenant: TenantConfig) -> None:
        """After a new event committed: wake the worker, tell the tenant's observers."""
        # An inline request's runs are its own: nothing for the worker to claim.
        if self.worker is not None and result.runs and delivery.lease is None:
            self.worker.notify()
        if self._observers is None or delivery.tenant not in self._observed_tenants:
            return
        self._observers.submit(self._tell_observers, result, delivery, tenant)

    def _tell_observers(self, result: IngestResult, delivery: Delivery, tenant: TenantConfig) -> None:
        try:
            stored = StoredEvent(
                id=result.event_id,
                tenant=delivery.tenant,
                stripe_event_id=delivery.stripe_event_id,
                type=delivery.type,
                # Read here, off the event loop, by the standard library: exactly the payload
                # the handlers read (the receiver's faster parser reads big integers as floats).
                payload=json.loads(delivery.payload),
                secret_index=delivery.secret_index,
                runs=result.runs,
            )
            self.plugins.hooks_for(tenant).event_stored(event=stored, tenant=tenant)
        except Exception:
            # The event is committed and acknowledged; an observer cannot undo that.
            log.exception("an event_stored hook raised")

    def with_inline_lease(self, delivery: Delivery) -> Delivery:
        """`delivery` under a fresh claim of its request's: its runs are stored `running`
        under it (or, on a redelivery, adopted), for `process_inline` to run."""
        return replace(delivery, lease=self.processor.inline_lease())

    async def process_inline(self, event_id: int, lease: Lease) -> list[str]:
        """Run the event's runs `lease` holds (created or adopted with the delivery, so no
        worker has them); return the errors of those that failed.

        Runs another owner holds are not this request's to run or to wait for. Cancelled (the
        server gives up on the request), it hands back the runs it has not started: due at
        once for the worker. The one under way finishes in its thread and records its end.
        """
        loop = asyncio.get_running_loop()
        lookup = loop.run_in_executor(None, self.processor.owned, event_id, lease)
        try:
            # Shielded: cancelled while the runs are being looked up, they are still found,
            # and handed back.
            waiting = deque(await asyncio.shield(lookup))
        except asyncio.CancelledError:

            def hand_back(done: asyncio.Future[list[ClaimedRun]]) -> None:
                if done.exception() is None:
                    self._hand_back(done.result())

            lookup.add_done_callback(hand_back)
            raise
        errors = []
        try:
            while waiting:
                run = waiting.popleft()
                outcome = await loop.run_in_executor(None, self.processor.execute, run)
                if outcome.status in (Outcome.FAILED, Outcome.DEAD) and outcome.error is not None:
                    errors.append(outcome.error)
        except BaseException:
            # Cancelled, or the store failed: what has not started goes back at once.
            self._hand_back(list(waiting))
            raise
        return errors

    def _hand_back(self, runs: list[ClaimedRun]) -> None:
        """Give back an inline request's unstarted runs, off the event loop, and wake the
        worker; if that fails, their lease runs out and the worker reclaims them anyway."""
        if not runs:
            return

        def release() -> None:
            if self.processor.release_or_let_expire(runs, "inline") and self.worker is not None:
                self.worker.notify()

        asyncio.get_running_loop().run_in_executor(None, release)
