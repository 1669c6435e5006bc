"""`create_app`: the ASGI app, and the runtime it starts and stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from . import migrations
from .config import Config, TenantConfig
from .eventlog import Delivery, EventLog, IngestResult
from .ingest import BatchWriter, healthz, receive
from .plugins import PluginHost
from .processing import Processor
from .routing import JSON_ERROR_HANDLERS, TenantRoute
from .store import Store
from .types import StoredEvent
from .worker import Worker

__all__ = ["Payhook", "PayhookApp", "create_app"]

log = logging.getLogger("payhook")


class Payhook:
    """Config, store, plugins, ingest writer and (optionally) an in-process worker."""

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
        self.processor = Processor(config, self.store, self.plugins)
        self.writer = BatchWriter(EventLog(self.store))
        self.run_worker = config.processing.worker if run_worker is None else run_worker
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._notify_stored = bool(self.plugins.hook.event_stored.get_hookimpls())

    async def ensure_started(self) -> None:
        """Start on first use when nobody ran the lifespan (a mounted app, say)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.start()

    async def start(self) -> None:
        if self._started:
            return
        self.plugins.hook.startup(host=self.plugins)
        self.store.start_maintenance()
        self.writer.start()
        if self.run_worker:
            processing = self.config.processing
            self.worker = Worker(
                self.processor,
                concurrency=processing.concurrency,
                batch_size=processing.batch_size,
                poll_interval=processing.poll_interval,
            )
            self._worker_task = asyncio.create_task(self.worker.run(), name="payhook-worker")
        self._started = True
        log.info(
            "payhook started: %d tenants, plugins %s, worker %s",
            len(self.config.tenants),
            ", ".join(self.plugins.names) or "none",
            "in-process" if self.run_worker else "external",
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
        self._started = False
        self.store.dispose()
        return abandoned

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def event_stored(
        self, result: IngestResult, delivery: Delivery, event: dict[str, Any], tenant: TenantConfig
    ) -> None:
        if self.worker is not None and result.runs:
            self.worker.notify()
        if not self._notify_stored:
            return
        stored = StoredEvent(
            id=result.event_id,
            tenant=delivery.tenant,
            stripe_event_id=delivery.stripe_event_id,
            type=delivery.type,
            payload=event,
            secret_index=delivery.secret_index,
            runs=result.runs,
        )
        try:
            self.plugins.hook.event_stored(event=stored, tenant=tenant)
        except Exception:
            # The event is committed and will be acknowledged; an observer cannot undo that.
            log.exception("an event_stored hook raised")

    async def process_inline(self, event_id: int) -> list[str]:
        """Run this event's waiting runs now; return the errors of those that failed."""
        loop = asyncio.get_running_loop()
        claimed = await loop.run_in_executor(None, lambda: self.processor.claim(1000, event_id))
        errors = []
        for run in claimed:
            outcome = await loop.run_in_executor(None, self.processor.execute, run)
            if outcome.error is not None:
                errors.append(outcome.error)
        return errors


class PayhookApp(Starlette):
    """The Starlette app, with its runtime at `.payhook` and `.lifespan` for hosts."""

    payhook: Payhook

    def lifespan(self, app: Any = None) -> Any:
        """Enter this from a host app's lifespan when payhook is mounted."""
        return self.payhook.lifespan(app)


def create_app(
    config: Config,
    plugins: Mapping[str, object] | None = None,
    *,
    store: Store | None = None,
    migrate: bool = False,
    run_worker: bool | None = None,
    debug: bool = False,
) -> PayhookApp:
    """Build the ASGI app. `plugins=None` discovers installed plugins by entry point."""
    payhook = Payhook(config, plugins, store=store, migrate=migrate, run_worker=run_worker)
    app = PayhookApp(
        debug=debug,
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            TenantRoute("/{tenant}", receive, methods=["POST"]),
        ],
        exception_handlers=JSON_ERROR_HANDLERS,
        lifespan=payhook.lifespan,
    )
    # No redirect from /tenant/ to /tenant: Starlette builds its target from the request's
    # Host header, so anyone could make payhook point at their host. A tenant has one URL.
    app.router.redirect_slashes = False
    app.payhook = payhook
    app.state.payhook = payhook
    return app
