"""Handlers' calls to Stripe (`ctx.fetch_latest()`, `ctx.stripe`), made gently and once.

A burst of events about one object (say `payment_intent.*` during checkout) would have every
handler ask for the same object at once: identical requests in flight are made once and
share the answer. And each tenant's calls are held to a rate, so a backlog drained at full
speed stays under Stripe's per-account limit instead of turning into 429s.

On SQLite a handler that read, then lost the race to write, is run again within the same
attempt (see payhook.execute.processing); `AttemptAnswers` gives that re-run the answers the
first run got, so the core never repeats a call the handler already made.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["AttemptAnswers", "Coalescer", "RateLimiter", "Replaying"]

T = TypeVar("T")


class RateLimiter:
    """At most `rate` acquisitions per second on average, with bursts of up to `rate`."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until a call may go out."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)


class Coalescer:
    """Runs one call per key at a time; callers arriving meanwhile get its result (or error)."""

    def __init__(self) -> None:
        self._in_flight: dict[Any, Future[Any]] = {}
        self._lock = threading.Lock()

    def call(self, key: Any, func: Callable[[], T]) -> T:
        with self._lock:
            pending = self._in_flight.get(key)
            leader = pending is None
            if pending is None:
                pending = self._in_flight[key] = Future()
        if not leader:
            result: T = pending.result()
            return result
        try:
            value = func()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                del self._in_flight[key]


class AttemptAnswers:
    """What one attempt's handler got from Stripe, kept for a re-run of that attempt.

    `call(key, func)` calls `func` and keeps its result (or its exception). After `replay()`,
    each call gets, in order, what the same call (the same `key`) got before, each answer
    once; a call the first run did not make is made then. Only a re-run of one attempt
    shares it: the next attempt (a retry after a failure) asks Stripe afresh.
    """

    __slots__ = ("_kept", "_lock", "_replayed")

    def __init__(self) -> None:
        self._kept: dict[Hashable, list[tuple[bool, Any]]] = {}
        self._replayed: dict[Hashable, deque[tuple[bool, Any]]] = {}
        self._lock = threading.Lock()

    def replay(self) -> None:
        """From now on, calls get the answers kept so far (the re-run begins)."""
        with self._lock:
            self._replayed = {key: deque(answers) for key, answers in self._kept.items()}

    @property
    def calls(self) -> int:
        """How many calls were made to Stripe (not replayed) through this."""
        with self._lock:
            return sum(len(answers) for answers in self._kept.values())

    def call(self, key: Hashable, func: Callable[[], T]) -> T:
        with self._lock:
            waiting = self._replayed.get(key)
            answer = waiting.popleft() if waiting else None
        if answer is None:
            try:
                value = func()
            except Exception as exc:
                self._keep(key, (False, exc))
                raise
            self._keep(key, (True, value))
            return value
        ok, value = answer
        if not ok:
            raise value
        result: T = value
        return result

    def _keep(self, key: Hashable, answer: tuple[bool, Any]) -> None:
        with self._lock:
            self._kept.setdefault(key, []).append(answer)


class Replaying:
    """A Stripe client (or one of its services) whose method calls go through `answers`.

    `ctx.stripe.v1.payment_intents.retrieve("pi_1")` called again in a re-run of the same
    attempt returns what the first run got instead of calling Stripe. Calls are told apart
    by the attribute path and the arguments' `repr`. It passes for the client it wraps
    (`isinstance(ctx.stripe, stripe.StripeClient)` holds).
    """

    __slots__ = ("_answers", "_path", "_target")

    def __init__(self, target: Any, answers: AttemptAnswers, path: tuple[str, ...] = ()) -> None:
        self._target = target
        self._answers = answers
        self._path = path

    # isinstance() asks __class__ too: a wrapped client still passes for a StripeClient.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or isinstance(value, type):
            return value
        path = (*self._path, name)
        if callable(value):
            return functools.partial(self._call, path, value)
        if type(value).__module__.startswith("stripe."):
            return Replaying(value, self._answers, path)  # a service: its methods call Stripe
        return value

    def __repr__(self) -> str:
        return f"Replaying({self._target!r})"

    def _call(self, path: tuple[str, ...], method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        key = (path, repr(args), repr(sorted(kwargs.items())))
        return self._answers.call(key, lambda: method(*args, **kwargs))
