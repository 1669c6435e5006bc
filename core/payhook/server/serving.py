"""How `payhook serve` runs uvicorn: the HTTP/1.1 parsers it offers, and their limits.

Both bound what one connection can cost. A request line and headers over MAX_HEAD_BYTES
get 400 and the connection closed, so memory stays flat whatever a client sends; and a
request head must be complete within the head timeout of the connection opening or of the
previous answer, so a client that connects and says nothing, or trickles a header, cannot
hold a connection for ever.

* `httptools` (the default), uvicorn's C parser, with both bounds added by payhook
  (payhook.server.protocols): uvicorn itself gives it neither.
* `h11`, uvicorn's pure-Python parser, with the same bounds (payhook.server.protocols):
  slower, and kept as the alternative.

bench/RESULTS.md records what each costs in throughput.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = [
    "DEFAULT_HTTP",
    "HTTP_PARSERS",
    "KEEP_ALIVE_SECONDS",
    "MAX_HEAD_BYTES",
    "listening_socket",
    "uvicorn_options",
]

HTTP_PARSERS = ("h11", "httptools")
DEFAULT_HTTP = "httptools"
# Stripe's request heads are about 1 KiB; 64 KiB leaves room for proxies' headers and
# long paths while keeping a hostile client's buffer small.
MAX_HEAD_BYTES = 64 * 1024
# uvicorn's default, stated here so that the docs can name it: an idle keep-alive
# connection is closed after this many seconds.
KEEP_ALIVE_SECONDS = 5


def uvicorn_options(http: str, head_timeout: float, limit_concurrency: int | None) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` that select `http` and set the connection limits."""
    options: dict[str, Any] = {
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "limit_concurrency": limit_concurrency,
    }
    # Imported here: this module is read by every `payhook` command, uvicorn only by serve.
    # uvicorn makes one protocol object per connection from a class; a subclass of our own
    # carries this server's limits without changing the shared class.
    if http == "httptools":
        from payhook.server.protocols import HttpToolsWithHeadLimits

        class FastConfigured(HttpToolsWithHeadLimits):
            pass

        FastConfigured.head_timeout = head_timeout
        FastConfigured.max_head_bytes = MAX_HEAD_BYTES
        return {**options, "http": FastConfigured}
    if http != "h11":
        raise ValueError(f"unknown HTTP parser {http!r}; expected one of {', '.join(HTTP_PARSERS)}")
    from payhook.server.protocols import H11WithHeadDeadline

    class Configured(H11WithHeadDeadline):
        pass

    Configured.head_timeout = head_timeout
    Configured.max_head_bytes = MAX_HEAD_BYTES
    return {**options, "http": Configured}


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket; OSError saying which address when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(backlog)
    return sock
