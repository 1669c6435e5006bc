"""Run one claimed handler run in its own transaction, and record what happened."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import stripe

from .config import Config, RetryPolicy
from .context import GiveUp, HandlerContext, RetryLater, Skip
from .models import RunStatus, utcnow
from .plugins import PluginHost
from .store import ClaimedRun, Store

__all__ = ["Processor", "RunOutcome", "backoff_delay"]

log = logging.getLogger("payhook.processing")


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: RunStatus
    error: str | None = None


def backoff_delay(policy: RetryPolicy, failures: int) -> float:
    """Seconds before the next attempt: exponential from `backoff_base`, capped, with jitter.

    Jitter spreads retries of a burst that failed together (say, a dependency outage)
    so they do not all come back in the same second.
    """
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2 ** max(0, failures - 1))
    return float(ceiling * random.uniform(0.5, 1.0))


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Processor:
    """Claims runs and executes them; used by the worker and by inline mode."""

    def __init__(self, config: Config, store: Store, host: PluginHost, owner: str | None = None):
        self.config = config
        self.store = store
        self.host = host
        self.owner = owner or default_owner()

    def claim(self, limit: int, event_id: int | None = None) -> list[ClaimedRun]:
        return self.store.claim(self.owner, limit, self.config.processing.lease_seconds, event_id=event_id)

    def execute(self, run: ClaimedRun) -> RunOutcome:
        """Run the handler, commit its work with the success mark, or record the failure."""
        policy = self.config.processing.retry_for(run.plugin)
        lease = self.config.processing.lease_seconds
        if time.monotonic() - run.claimed_at > lease / 4 and not self.store.renew_lease(run, lease):
            # It waited in this worker's queue past most of its lease and was taken over.
            return RunOutcome(run.id, RunStatus.RUNNING, "lease lost")
        if run.reclaimed:
            # The previous claimer died (or hung) mid-attempt: that attempt failed.
            lost = run.attempts - 1
            dead = lost - run.attempt_base >= policy.max_attempts
            message = f"the worker holding attempt {lost} did not finish before its lease expired"
            self.store.record_failure(
                run,
                attempt=lost,
                error_type="LeaseExpired",
                message=message,
                traceback="",
                next_attempt_at=None,
                release=dead,
            )
            if dead:
                return RunOutcome(run.id, RunStatus.DEAD, message)
        tenant = self.config.tenants.get(run.tenant)
        if tenant is None or run.plugin not in tenant.plugins:
            return self._fail(
                run,
                policy,
                GiveUp(
                    f"plugin {run.plugin!r} is not enabled for tenant {run.tenant!r}; enable it and "
                    "replay the event to run it"
                ),
                None,
                None,
            )
        handler = self.host.handler(run.plugin, run.handler)
        if handler is None:
            missing = LookupError(f"handler {run.handler!r} of plugin {run.plugin!r} is not registered")
            return self._fail(run, policy, missing, None, None)

        event = stripe.Event.construct_from(json.loads(run.payload), None)
        logger = logging.LoggerAdapter(
            logging.getLogger(f"payhook.plugin.{run.plugin}"),
            {"tenant": run.tenant, "event": run.stripe_event_id, "run": run.id},
        )
        started = time.perf_counter()
        error: BaseException | None = None
        skipped: Skip | None = None
        with self.store.session() as session:
            ctx = HandlerContext(
                session=session,
                tenant=tenant,
                plugin=run.plugin,
                config=tenant.config_for(run.plugin),
                logger=logger,
                hook=self.host.hooks_for(tenant),
                run_id=run.id,
                attempt=run.attempts,
                event_id=run.event_id,
                _store=self.store,
                _lease_token=run.lease_token,
            )
            try:
                self.host.hook.run_handler(handler=handler, event=event, ctx=ctx)
                elapsed = (time.perf_counter() - started) * 1000
                if not self.store.mark_succeeded(session, run, elapsed):
                    session.rollback()
                    log.warning("run %s lost its lease before committing; its work was rolled back", run.id)
                    return RunOutcome(run.id, RunStatus.RUNNING, "lease lost")
                session.commit()
            except Skip as exc:
                session.rollback()
                skipped = exc
            except Exception as exc:
                session.rollback()
                error = exc
        if skipped is not None:
            elapsed = (time.perf_counter() - started) * 1000
            if not self.store.record_skip(run, skipped.reason, elapsed):
                return RunOutcome(run.id, RunStatus.RUNNING, "lease lost")
            logger.info("run %s skipped: %s", run.id, skipped.reason)
            return RunOutcome(run.id, RunStatus.SKIPPED, skipped.reason)
        if error is not None:
            return self._fail(run, policy, error, event, ctx)
        for callback in ctx._after_commit:
            try:
                callback()
            except Exception:
                # The handler's work is committed; the run stays succeeded.
                logger.exception("after-commit callback of run %s failed", run.id)
        return RunOutcome(run.id, RunStatus.SUCCEEDED)

    def abandon(self, runs: list[ClaimedRun]) -> None:
        """Hand back runs this worker cannot finish (shutdown): due now for another worker."""
        for run in runs:
            self.store.record_failure(
                run,
                attempt=run.attempts,
                error_type="WorkerStopped",
                message=f"worker {self.owner} stopped before this run finished",
                traceback="",
                next_attempt_at=utcnow(),
            )

    def _fail(
        self,
        run: ClaimedRun,
        policy: RetryPolicy,
        error: BaseException,
        event: Any,
        ctx: HandlerContext | None,
    ) -> RunOutcome:
        failures = run.attempts - run.attempt_base
        if isinstance(error, GiveUp) or failures >= policy.max_attempts:
            next_attempt_at = None
        elif isinstance(error, RetryLater):
            next_attempt_at = utcnow() + timedelta(seconds=max(0.0, error.delay))
        else:
            next_attempt_at = utcnow() + timedelta(seconds=backoff_delay(policy, failures))
        error_type = _qualified_name(type(error))
        message = str(error) or error_type
        text = "".join(traceback.format_exception(error))
        if not self.store.record_failure(
            run,
            attempt=run.attempts,
            error_type=error_type,
            message=message,
            traceback=text,
            next_attempt_at=next_attempt_at,
        ):
            return RunOutcome(run.id, RunStatus.RUNNING, "lease lost")
        dead = next_attempt_at is None
        log.log(
            logging.ERROR if dead else logging.WARNING,
            "run %s (%s %s, tenant %s, event %s) attempt %s failed%s: %s: %s",
            run.id,
            run.plugin,
            run.handler,
            run.tenant,
            run.stripe_event_id,
            run.attempts,
            "; giving up" if dead else "; will retry",
            error_type,
            message,
        )
        if ctx is not None:
            try:
                self.host.hook.handler_failed(event=event, ctx=ctx, error=error, dead=dead)
            except Exception:
                log.exception("a handler_failed hook raised")
        return RunOutcome(run.id, RunStatus.DEAD if dead else RunStatus.FAILED, message)


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
