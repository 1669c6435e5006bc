"""Execute one claimed handler run in its own transaction, and record what happened."""

from __future__ import annotations

import functools
import json
import linecache
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import pluggy

from payhook.config import Config, RetryPolicy, TenantConfig
from payhook.execute.observe import observe_run, run_observed
from payhook.execute.outcome import Outcome, RunOutcome
from payhook.plugins import host as plugin_host
from payhook.plugins.context import GiveUp, HandlerContext, RetryLater, Skip
from payhook.plugins.host import PluginHost
from payhook.plugins.types import Handler
from payhook.store.engine import Store
from payhook.store.models import utcnow
from payhook.store.runs import ClaimedRun, Failure, Lease, Runs
from payhook.store.sqlite import WriteConflict, is_lock_error
from payhook.stripe_api.clients import StripeClients
from payhook.stripe_api.fetch import AttemptAnswers

__all__ = ["Processor", "UnmarkedSuccess", "backoff_delay"]

log = logging.getLogger("payhook.processing")


@dataclass(frozen=True)
class UnmarkedSuccess:
    """A run whose handler returned without opening its session or asking for after-commit
    work: all that is left is its success mark, which `Processor.mark_succeeded` writes
    together with others'. Until then the run is `running` under its lease, so a worker that
    dies first leaves it to be reclaimed and run again."""

    run: ClaimedRun
    duration_ms: float
    # time.perf_counter() when its execution began: the observed duration ends at the mark.
    started: float


# A handler's SQLite write lost a race (see Processor.execute): run it again, locking early.
class _Again(Enum):
    AGAIN = "again"


AGAIN = _Again.AGAIN
MarkLater = Callable[[UnmarkedSuccess], None]

# The code between a run's claim and its handler: left out of recorded tracebacks.
CALLING_CODE = tuple(
    str(Path(path).parent) + os.sep for path in (__file__, plugin_host.__file__, pluggy.__file__)
)


# How much of an error a recorded traceback keeps: a failure storm records one per attempt,
# so its cost and size are bounded whatever the handler raised.
CHAINED_EXCEPTIONS = 5  # `raise ... from`, or raised while handling another
FRAMES_FIRST, FRAMES_LAST = 10, 30  # of an exception's frames, when it has more than both
REPEATS_SHOWN = 3  # a frame repeated over and over (recursion): the first few, then a count
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def handler_traceback(error: BaseException) -> str:
    """`error`'s traceback from the handler's own frames on, with its exception line, as
    Python prints it but without the column markers, and bounded (see the constants above).

    payhook's and pluggy's frames above the handler call say nothing about the failure. An
    error raised before any handler frame (payhook's own) keeps every frame. It reads the
    traceback's frames and the cached source lines directly: `traceback.TracebackException`
    costs more than the rest of a failed run (it finds each frame's columns, and checks every
    source file on disk).
    """
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    joiner = ""
    while current is not None and id(current) not in seen and len(chain) < CHAINED_EXCEPTIONS:
        seen.add(id(current))
        chain.append((current, joiner))
        if current.__cause__ is not None:
            current, joiner = current.__cause__, CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, joiner = current.__context__, CONTEXT
        else:
            current = None
    parts: list[str] = []
    for exc, joined_by in reversed(chain):
        _format_exception(exc, parts)
        parts.append(joined_by)
    return "".join(parts)


def _format_exception(error: BaseException, parts: list[str]) -> None:
    frames: list[tuple[str, int, str, Any]] = []
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name, tb.tb_frame.f_globals))
        tb = tb.tb_next
    first = next((i for i, frame in enumerate(frames) if not frame[0].startswith(CALLING_CODE)), None)
    if first:
        frames = frames[first:]
    if frames:
        parts.append("Traceback (most recent call last):\n")
        _format_frames(frames, parts)
    parts.append(_exception_line(error))
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        parts.extend(f"{note}\n" for note in notes[:CHAINED_EXCEPTIONS] if isinstance(note, str))


def _format_frames(frames: list[tuple[str, int, str, Any]], parts: list[str]) -> None:
    # Repeats collapsed first (as Python prints them), then the middle of what is left.
    entries: list[tuple[str, int, str, Any] | str] = []
    repeats = 0

    def end_repeats() -> None:
        if repeats >= REPEATS_SHOWN:
            more = repeats - REPEATS_SHOWN + 1
            entries.append(f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n")

    for index, frame in enumerate(frames):
        if index and frame[:3] == frames[index - 1][:3]:
            repeats += 1
            if repeats >= REPEATS_SHOWN:
                continue
        else:
            end_repeats()
            repeats = 0
        entries.append(frame)
    end_repeats()
    left_out = len(entries) - FRAMES_FIRST - FRAMES_LAST
    if left_out > 0:
        entries = [*entries[:FRAMES_FIRST], f"  [... {left_out} more lines ...]\n", *entries[-FRAMES_LAST:]]
    for entry in entries:
        if isinstance(entry, str):
            parts.append(entry)
            continue
        filename, lineno, name, module_globals = entry
        parts.append(f'  File "{filename}", line {lineno}, in {name}\n')
        line = linecache.getline(filename, lineno, module_globals).strip()
        if line:
            parts.append(f"    {line}\n")


def _exception_line(error: BaseException) -> str:
    """The last line Python prints for `error`: `module.Type: message`."""
    cls = type(error)
    name = cls.__qualname__
    if cls.__module__ not in ("__main__", "builtins"):
        name = f"{cls.__module__}.{name}"
    try:
        message = str(error)
    except Exception:
        message = "<exception str() failed>"
    return f"{name}: {message}\n" if message else f"{name}\n"


def backoff_delay(policy: RetryPolicy, failures: int) -> float:
    """Seconds before the next attempt: exponential from `backoff_base`, capped, with jitter.

    Jitter spreads retries of a burst that failed together (say, a dependency outage)
    so they do not all come back in the same second.
    """
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2 ** max(0, failures - 1))
    return float(ceiling * random.uniform(0.5, 1.0))


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# The error types payhook records without an exception to name them.
LEASE_EXPIRED = "payhook.LeaseExpired"
WORKER_STOPPED = "payhook.WorkerStopped"


def qualified_name(cls: type) -> str:
    """How an error type is stored: `payhook.GiveUp`, `ValueError`, `pkg.module.Error`.

    Every exception payhook defines is stored as `payhook.<Name>`, public or not, whichever
    of its modules defines it: failures group by this name (`payhook failures`), and one
    recorded before a module moved must group with one recorded after.
    """
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module == "payhook" or module.startswith("payhook."):
        return f"payhook.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


def loggable(text: str) -> str:
    """`text` for a log line: as it is if printable, else JSON-quoted (as `logs.Fields`
    writes such a value), so that a newline or escape code in it cannot forge a line."""
    return text if text.isprintable() else json.dumps(text)


class Processor:
    """Claims runs and executes them; used by the worker, inline mode and tests."""

    def __init__(
        self,
        config: Config,
        store: Store,
        host: PluginHost,
        runs: Runs,
        owner: str | None = None,
        stripe_clients: StripeClients | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.host = host
        self.runs = runs
        # Handlers' `ctx.stripe`: one client per tenant, built when a handler first asks.
        self.stripe_clients = stripe_clients or StripeClients(config.stripe)
        self.owner = owner or default_owner()
        self._loggers: dict[str, logging.Logger] = {}

    def claim(self, limit: int, event_id: int | None = None) -> list[ClaimedRun]:
        return self.runs.claim(self.owner, limit, self.config.processing.lease_seconds, event_id=event_id)

    def inline_lease(self) -> Lease:
        """A fresh claim for one inline request: the runs it stores are created (or, on a
        redelivery, adopted) under it, so no worker can take them (see runs.py)."""
        return Lease(f"{self.owner} inline", uuid.uuid4().hex, self.config.processing.lease_seconds)

    def owned(self, event_id: int, lease: Lease) -> list[ClaimedRun]:
        """The event's runs `lease` holds, ready for `execute`."""
        return self.runs.owned(event_id, lease)

    @observe_run
    def execute(self, run: ClaimedRun) -> RunOutcome:
        """Run the handler, commit its work with the success mark, or record the failure."""
        outcome = self._execute(run, None)
        assert outcome is not None
        return outcome

    def execute_or_defer(self, run: ClaimedRun, mark_later: MarkLater) -> None:
        """`execute`, except that a run whose handler wrote nothing and registered no
        after-commit work is handed to `mark_later` instead of being marked succeeded here.

        Such a run's outcome is observed when `mark_succeeded` has committed its mark.
        """
        started = time.perf_counter()
        outcome = self._execute(run, mark_later, started)
        if outcome is not None:
            run_observed(run, outcome, time.perf_counter() - started)

    def mark_succeeded(self, finished: Sequence[UnmarkedSuccess]) -> list[RunOutcome]:
        """Write the success marks of runs `execute_or_defer` deferred, in one commit.

        A run whose claim was lost in the meantime is not marked (LEASE_LOST): its new owner
        decides what becomes of it. If the store fails, nothing is marked and the error
        propagates: the runs stay `running` until their leases expire, then run again.
        """
        marked = self.runs.succeed_many([(item.run, item.duration_ms) for item in finished])
        # Only now, with the marks committed, are these runs succeeded.
        ended = time.perf_counter()
        outcomes = []
        for item in finished:
            if item.run.id in marked:
                outcome = RunOutcome(item.run.id, Outcome.SUCCEEDED)
            else:
                log.warning("run %s lost its lease before its success was recorded", item.run.id)
                outcome = _lease_lost(item.run)
            run_observed(item.run, outcome, ended - item.started)
            outcomes.append(outcome)
        return outcomes

    def _execute(
        self, run: ClaimedRun, mark_later: MarkLater | None, started: float | None = None
    ) -> RunOutcome | None:
        """`execute`; None if the success mark was handed to `mark_later`."""
        policy = self.config.processing.retry_for(run.plugin)
        lease = self.config.processing.lease_seconds
        if time.monotonic() - run.claimed_at > lease / 4 and not self.runs.renew_lease(run, lease):
            # It waited in this worker's queue past most of its lease and was taken over.
            return _lease_lost(run)
        if run.reclaimed:
            # The previous claimer died (or hung) mid-attempt: that attempt failed.
            lost = run.attempts - 1
            dead = lost - run.attempt_base >= policy.max_attempts
            failure = Failure(
                LEASE_EXPIRED,
                f"attempt {lost} did not finish before its lease expired: the worker or inline "
                "request holding it stopped or hung",
            )
            if not self.runs.note_lost_attempt(run, failure, dead=dead):
                return _lease_lost(run)
            if dead:
                return RunOutcome(run.id, Outcome.DEAD, failure.message)
        tenant = self.config.tenants.get(run.tenant)
        if tenant is None or run.plugin not in tenant.plugins:
            not_enabled = GiveUp(
                f"plugin {run.plugin!r} is not enabled for tenant {run.tenant!r}; enable it and "
                "replay the event to run it"
            )
            return self._fail(run, policy, not_enabled)
        handler = self.host.handler(run.plugin, run.handler)
        if handler is None:
            missing = LookupError(f"handler {run.handler!r} of plugin {run.plugin!r} is not registered")
            return self._fail(run, policy, missing)
        if started is None:
            started = time.perf_counter()
        # SQLite only: a handler that read, then lost the race to write, runs again on fresh
        # data, this time holding the write lock from its first statement, so it cannot
        # lose again (a lock wait is bounded like any other). The re-run gets the answers
        # Stripe gave the first run (`ctx.stripe`, `ctx.fetch_latest()`): re-running is the
        # core's doing, and must not call Stripe twice.
        answers = AttemptAnswers() if self.store.is_sqlite else None
        outcome = self._attempt(
            run, handler, tenant, policy, mark_later, started, answers, retry_conflict=answers is not None
        )
        if outcome is AGAIN:
            assert answers is not None
            answers.replay()
            outcome = self._attempt(
                run,
                handler,
                tenant,
                policy,
                mark_later,
                started,
                answers,
                retry_conflict=False,
                lock_early=True,
            )
        assert outcome is not AGAIN
        return outcome

    def _attempt(
        self,
        run: ClaimedRun,
        handler: Handler,
        tenant: TenantConfig,
        policy: RetryPolicy,
        mark_later: MarkLater | None,
        begun: float,
        answers: AttemptAnswers | None,
        *,
        retry_conflict: bool,
        lock_early: bool = False,
    ) -> RunOutcome | _Again | None:
        """One try of the handler; AGAIN after a lost SQLite write race (see `execute`), None
        when the success mark went to `mark_later`."""
        transaction = self.store.handler_transaction(lock_early=lock_early)
        ctx = HandlerContext(
            tenant=tenant,
            plugin=run.plugin,
            config=tenant.config_for(run.plugin),
            logger=logging.LoggerAdapter(
                self._logger(run.plugin), {"tenant": run.tenant, "event": run.stripe_event_id, "run": run.id}
            ),
            hook=self.host.hooks_for(tenant),
            settings_of=functools.partial(self.host.settings_for, tenant, run.plugin),
            run_id=run.id,
            attempt=run.attempts,
            event_id=run.event_id,
            is_replay=run.replayed,
            transaction=transaction,
            runs=self.runs,
            lease_token=run.lease_token,
            stripe_clients=self.stripe_clients,
            answers=answers,
        )
        started = time.perf_counter()
        try:
            try:
                event = ctx.event = self._event_for(run, tenant)
                ctx.hook.run_handler(handler=handler, event=event, ctx=ctx)
                elapsed = (time.perf_counter() - started) * 1000
                if transaction.used:
                    cursor = transaction.cursor_for_write()
                    try:
                        held = self.runs.succeed(cursor, run, elapsed)
                    finally:
                        cursor.close()
                    if held:
                        transaction.commit()
                    else:
                        transaction.rollback()
                elif mark_later is not None and not ctx.after_commit_queue:
                    # Nothing to commit with the mark, and nothing waits for it: it can be
                    # written with other runs' marks, and this thread go on to the next run.
                    mark_later(UnmarkedSuccess(run, elapsed, begun))
                    return None
                else:
                    held = self.runs.succeed_alone(run, elapsed)
            except Skip as exc:
                transaction.rollback()
                elapsed = (time.perf_counter() - started) * 1000
                if not self.runs.skip(run, exc.reason, elapsed):
                    return _lease_lost(run)
                ctx.logger.info("run %s skipped: %s", run.id, loggable(exc.reason))
                return RunOutcome(run.id, Outcome.SKIPPED, exc.reason)
            except Exception as exc:
                transaction.rollback()
                if retry_conflict and (isinstance(exc, WriteConflict) or is_lock_error(exc)):
                    return AGAIN
                elapsed = (time.perf_counter() - started) * 1000
                return self._fail(run, policy, exc, ctx, elapsed)
        finally:
            transaction.close()
        if not held:
            log.warning("run %s lost its lease before committing; its work was rolled back", run.id)
            return _lease_lost(run)
        for callback in ctx.after_commit_queue:
            try:
                callback()
            except Exception:
                # The handler's work is committed; the run stays succeeded.
                ctx.logger.exception("after-commit callback of run %s failed", run.id)
        return RunOutcome(run.id, Outcome.SUCCEEDED)

    def abandon(self, runs: list[ClaimedRun]) -> None:
        """Hand back runs this worker cannot finish (shutdown): due now for another worker."""
        failure = Failure(WORKER_STOPPED, f"worker {self.owner} stopped before this run finished")
        self.runs.abandon(runs, failure)

    def release(self, runs: list[ClaimedRun]) -> None:
        """Give back claimed runs that never started, as they were."""
        self.runs.release(runs)

    def release_or_let_expire(self, runs: list[ClaimedRun], whose: str) -> bool:
        """`release`, logging instead of raising (for a thread of its own): a run that could
        not be given back is reclaimed when its lease runs out. True when given back."""
        try:
            self.runs.release(runs)
        except Exception as exc:
            log.warning(
                "could not give back %d %s runs (%s); their leases will expire", len(runs), whose, exc
            )
            return False
        return True

    def _fail(
        self,
        run: ClaimedRun,
        policy: RetryPolicy,
        error: BaseException,
        ctx: HandlerContext | None = None,
        elapsed: float | None = None,
    ) -> RunOutcome:
        if isinstance(error, GiveUp) or run.failures >= policy.max_attempts:
            next_attempt_at = None
        elif isinstance(error, RetryLater):
            next_attempt_at = utcnow() + timedelta(seconds=max(0.0, error.delay))
        else:
            next_attempt_at = utcnow() + timedelta(seconds=backoff_delay(policy, run.failures))
        error_type = qualified_name(type(error))
        failure = Failure(error_type, str(error) or error_type, handler_traceback(error))
        if not self.runs.fail(run, failure, next_attempt_at=next_attempt_at, duration_ms=elapsed):
            return _lease_lost(run)
        dead = next_attempt_at is None
        log.log(
            logging.ERROR if dead else logging.WARNING,
            "run %s (%s %s, tenant %s, event %s) attempt %s failed%s: %s: %s",
            run.id,
            run.plugin,
            run.handler,
            run.tenant,
            loggable(run.stripe_event_id),
            run.attempts,
            "; giving up" if dead else "; will retry",
            error_type,
            loggable(failure.message),
        )
        if ctx is not None:
            try:
                ctx.hook.handler_failed(event=_event_or_none(run), ctx=ctx, error=error, dead=dead)
            except Exception:
                log.exception("a handler_failed hook raised")
        return RunOutcome(run.id, Outcome.DEAD if dead else Outcome.FAILED, failure.message)

    def _event_for(self, run: ClaimedRun, tenant: TenantConfig) -> Any:
        """What the handler gets: the snapshot event, or for a thin event the SDK's
        EventNotification of its type, on the tenant's client (so that `fetch_event()` and
        `fetch_related_object()` use the tenant's key)."""
        if not run.payload.is_thin:
            return run.payload.event
        client = self.stripe_clients.for_tenant(tenant)
        return client.parse_event_notification_without_verification(run.payload.text)

    def _logger(self, plugin: str) -> logging.Logger:
        logger = self._loggers.get(plugin)
        if logger is None:
            logger = self._loggers[plugin] = logging.getLogger(f"payhook.plugin.{plugin}")
        return logger


def _lease_lost(run: ClaimedRun) -> RunOutcome:
    return RunOutcome(run.id, Outcome.LEASE_LOST, "lease lost")


def _event_or_none(run: ClaimedRun) -> Any:
    try:
        return run.payload.event
    except Exception:
        return None
