"""How many wrong tokens one client may try: `LoginThrottle`.

Wrong tokens typed into the login form and wrong bearer tokens count alike: both are guesses
at the one operator token. A client that sent FAILURES_ALLOWED of them within WINDOW_SECONDS
is answered 429 until the oldest is a window old, whatever token it sends (the right one
too: a throttled client learns nothing); a session cookie, which guesses nothing, still
works.

The table remembers at most MAX_CLIENTS clients; past that, the client whose last wrong
token is the oldest is forgotten first, so many addresses fill a bounded table rather than
a growing one. It is kept in the process: `payhook serve` runs the operator app in one
process (with `--workers N`, in the first receiver only), a restart forgetting a minute of
failures gives a guesser ten more tries, and a host that mounts the app in N processes
allows N times the limit.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["FAILURES_ALLOWED", "MAX_CLIENTS", "WINDOW_SECONDS", "LoginThrottle", "client_key"]

FAILURES_ALLOWED = 10
WINDOW_SECONDS = 60.0
MAX_CLIENTS = 4096


def client_key(host: str | None) -> str:
    """Whom to count a failure against: the address, or for IPv6 its /64 network.

    One machine commonly holds a whole IPv6 /64, and would otherwise get a fresh allowance
    for each of its addresses.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Wrong tokens per client, in a sliding window. Used from the event loop only."""

    def __init__(
        self,
        *,
        failures_allowed: int = FAILURES_ALLOWED,
        window: float = WINDOW_SECONDS,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_allowed = failures_allowed
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        # Client -> the times of its recent wrong tokens; the least recently failing first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many clients the table remembers now."""
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until `client` may try a token again; None when it may now."""
        times = self._failures.get(client)
        if times is None:
            return None
        now = self.clock()
        self._forget_before(times, now - self.window)
        if not times:
            del self._failures[client]
            return None
        if len(times) < self.failures_allowed:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, client: str) -> None:
        """Count a wrong token from `client`."""
        now = self.clock()
        times = self._failures.pop(client, None)
        if times is None:
            times = deque(maxlen=self.failures_allowed)
        self._forget_before(times, now - self.window)
        times.append(now)
        self._failures[client] = times
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """`client` had the token: its past failures no longer count."""
        self._failures.pop(client, None)

    @staticmethod
    def _forget_before(times: deque[float], cutoff: float) -> None:
        while times and times[0] <= cutoff:
            times.popleft()
