"""A light HTTP/1.1 load generator: pre-signed requests over persistent keep-alive sockets.

The client shares two cores with the server, so everything costly (copying payloads,
JSON encoding, HMAC signing, building the request bytes) happens before the clock
starts. While timing, a connection only writes prepared bytes and parses the status line
and Content-Length of the answer, on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from payhook.receive.verification import sign
from payhook.testing.samples import FIXTURES, load_event

__all__ = [
    "Connection",
    "Level",
    "Prepared",
    "Tenant",
    "answer",
    "build_requests",
    "event_mix",
    "median_level",
    "new_loop",
    "run_level",
]

# The handled types are weighted up so that about a third of the load reaches a handler;
# every other shipped sample appears once per cycle (stored, then "ignored").
HANDLED_WEIGHT = 7
RESPONSE_STATUSES = (b"accepted", b"ignored", b"duplicate", b"verified")


@dataclass(frozen=True)
class Tenant:
    slug: str
    secret: str


@dataclass(frozen=True)
class Prepared:
    """One signed delivery, as the exact bytes to write on the socket."""

    tenant: str
    event_id: str
    handled: bool
    raw: bytes


@dataclass
class Level:
    """What one timed run at one concurrency measured."""

    concurrency: int
    requests: int
    seconds: float
    latencies_ns: list[int] = field(repr=False)
    http_statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    started: float = 0.0  # time.monotonic() at the first write
    finished: float = 0.0  # time.monotonic() at the last answer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the request latencies, in milliseconds."""
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] / 1e6

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.http_statuses.items() if status != 200)


def median_level(levels: Sequence[Level]) -> Level:
    """The repetition with the median rate, remembering every repetition's rate and how busy
    the rest of the machine was meanwhile (other cores), in the order they ran."""
    ordered = sorted(levels, key=lambda level: level.rate)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.extra["rates"] = [round(level.rate) for level in levels]
    chosen.extra["repeats"] = [
        {"rate": round(level.rate), "other_cores": level.extra.get("other_cores")} for level in levels
    ]
    return chosen


def event_mix(handled_types: Sequence[str], only_handled: bool = False) -> list[str]:
    """Sample names in the order the load cycles through them.

    `only_handled`: just the handled types, so that every event makes one handler run.
    """
    names = [path.stem for path in sorted(FIXTURES.glob("*.json")) if path.stem != "signature_vectors"]
    handled = [name for name in handled_types if name in names]
    if only_handled:
        return handled
    return names + handled * HANDLED_WEIGHT


def build_requests(
    count: int,
    tenants: Sequence[Tenant],
    handled_types: Sequence[str],
    host: str,
    port: int,
    only_handled: bool = False,
) -> list[Prepared]:
    """`count` unique signed deliveries, spread round-robin over tenants and samples."""
    mix = event_mix(handled_types, only_handled)
    templates = {name: json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8")) for name in mix}
    handled = set(handled_types)
    names: Iterator[str] = itertools.cycle(mix)
    prepared = []
    for index in range(count):
        tenant = tenants[index % len(tenants)]
        name = next(names)
        event = load_event(templates[name])  # a deep copy with a fresh id
        body = json.dumps(event).encode()
        head = (
            f"POST /{tenant.slug} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Stripe-Signature: {sign(body, tenant.secret)}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        prepared.append(Prepared(tenant.slug, event["id"], event["type"] in handled, head.encode() + body))
    return prepared


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            self._fail(ConnectionError("answer without Content-Length (chunked is not expected here)"))
            return
        start = marker + len(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", start)
        length = int(head[start : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionError("the server closed the connection")
        self._fail(self.closed)

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.closed is not None:
            raise self.closed
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def answer(body: bytes) -> str:
    # Cheaper than parsing JSON: payhook answers {"status": "<word>", ...}.
    for word in RESPONSE_STATUSES:
        if word in body:
            return word.decode()
    return "other"


async def run_level(
    requests: Sequence[Prepared],
    concurrency: int,
    host: str,
    port: int,
    timeout: float,
) -> Level:
    """Send every request, `concurrency` at a time (closed loop), and time each one."""
    loop = asyncio.get_running_loop()
    connections = [(await loop.create_connection(Connection, host, port))[1] for _ in range(concurrency)]
    latencies = [0] * len(requests)
    statuses = [0] * len(requests)
    bodies: list[bytes] = [b""] * len(requests)
    indexes = itertools.count()  # shared: each connection takes the next unsent request

    async def drive(conn: Connection) -> None:
        for index in indexes:
            if index >= len(requests):
                return
            sent = time.perf_counter_ns()
            statuses[index], bodies[index] = await conn.request(requests[index].raw)
            latencies[index] = time.perf_counter_ns() - sent

    cpu = time.process_time()
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(drive(conn) for conn in connections)), timeout)
    finally:
        finished = time.monotonic()
        cpu = time.process_time() - cpu
        for conn in connections:
            if conn.transport is not None:
                conn.transport.close()
    return Level(
        concurrency=concurrency,
        requests=len(requests),
        seconds=finished - started,
        latencies_ns=latencies,
        http_statuses=Counter(statuses),
        answers=Counter(answer(body) for body in bodies),
        client_cpu=cpu,
        started=started,
        finished=finished,
    )


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: the client's own overhead is part of what the cores share."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]
