"""Open-loop load: send prepared requests on a fixed schedule, whatever the answers do.

The closed-loop client in loadgen.py measures capacity: it sends the next request when an
answer comes back, so a slow server simply gets less load. A lag measurement needs the
opposite, a steady arrival rate like Stripe's: request i is due at start + i / rate, and the
sender takes any idle keep-alive connection for it. When none is idle the request leaves
late; the lateness is recorded, so a run that could not hold its rate says so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadgen import Connection, Prepared, answer

__all__ = ["Paced", "run_paced"]

# A request this late (seconds) counts as not sent on schedule.
LATE = 0.010


@dataclass
class Paced:
    """What one paced run did: the schedule it kept and how the server answered."""

    rate: float  # the target, requests per second
    requests: int
    seconds: float  # first send to last answer
    send_seconds: float  # first send to last send
    lateness: list[float] = field(repr=False)  # seconds behind schedule, per request
    latencies_ns: list[int] = field(repr=False)
    http_statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    client_cpu: float = 0.0

    @property
    def achieved_rate(self) -> float:
        """Requests per second over the sending window (the target, if it was kept)."""
        return (self.requests - 1) / self.send_seconds if self.send_seconds else 0.0

    @property
    def late(self) -> int:
        return sum(1 for seconds in self.lateness if seconds > LATE)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.http_statuses.items() if status != 200)


async def run_paced(
    requests: Sequence[Prepared],
    rate: float,
    host: str,
    ports: Sequence[int],
    timeout: float,
    connections: int = 16,
) -> Paced:
    """Send request i at start + i / rate, to ports[i % len(ports)].

    `connections` keep-alive connections per port are opened before the clock starts (each
    carries one request at a time); more are never opened, so a server that falls behind
    shows up as lateness rather than as a growing pile of sockets.
    """
    loop = asyncio.get_running_loop()
    idle: dict[int, asyncio.Queue[Connection]] = {}
    opened: list[Connection] = []
    for port in ports:
        idle[port] = asyncio.Queue()
        for _ in range(connections):
            conn = (await loop.create_connection(Connection, host, port))[1]
            opened.append(conn)
            idle[port].put_nowait(conn)
    count = len(requests)
    lateness = [0.0] * count
    latencies = [0] * count
    statuses = [0] * count
    bodies: list[bytes] = [b""] * count
    in_flight: set[asyncio.Task[None]] = set()

    async def one(index: int, port: int, conn: Connection) -> None:
        sent = time.perf_counter_ns()
        try:
            statuses[index], bodies[index] = await conn.request(requests[index].raw)
        finally:
            latencies[index] = time.perf_counter_ns() - sent
            idle[port].put_nowait(conn)

    async def schedule() -> float:
        start = loop.time()
        ports_cycle = itertools.cycle(ports)
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            port = next(ports_cycle)
            conn = await idle[port].get()  # waits only when every connection is busy
            lateness[index] = max(0.0, loop.time() - due)
            task = asyncio.create_task(one(index, port, conn))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        sent_all = loop.time() - start
        await asyncio.gather(*list(in_flight))
        return sent_all

    cpu = time.process_time()
    started = time.monotonic()
    try:
        send_seconds = await asyncio.wait_for(schedule(), timeout)
    finally:
        seconds = time.monotonic() - started
        cpu = time.process_time() - cpu
        for conn in opened:
            if conn.transport is not None:
                conn.transport.close()
    return Paced(
        rate=rate,
        requests=count,
        seconds=seconds,
        send_seconds=send_seconds,
        lateness=lateness,
        latencies_ns=latencies,
        http_statuses=Counter(statuses),
        answers=Counter(answer(body) for body in bodies),
        connections=len(opened),
        client_cpu=cpu,
    )
