"""`payhook serve` with `[operator]`: the operator app on its own address, in the same process.

The operator app gets a listener of its own ([operator] host and port, 127.0.0.1:9300 by
default) rather than a path on the webhook port: the webhook port faces Stripe and the
internet, the operator port should face only the people and the Prometheus that need it.
Both servers share one event loop, one runtime and one store.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.types import ASGIApp

from payhook.config import Config, OperatorConfig
from payhook.logs import route_server_loggers
from payhook.operator.app import create_operator_app
from payhook.receive.app import PayhookApp
from payhook.server.serving import listening_socket

__all__ = ["with_operator"]

log = logging.getLogger("payhook.operator")

# Seconds open operator requests get to finish when payhook serve stops.
SHUTDOWN_GRACE = 5.0


def with_operator(app: PayhookApp, config: Config) -> PayhookApp:
    """`app`, whose lifespan also runs the operator listener when `[operator]` is configured.

    With `[logging] format = "json"` the lifespan also hands uvicorn's own loggers to
    payhook's handler, so that every line of `payhook serve` is JSON from startup on.
    """
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        if config.logging.format == "json":
            route_server_loggers()
        async with AsyncExitStack() as stack:
            state = await stack.enter_async_context(inner(host))
            if config.operator is not None:
                operator = create_operator_app(config, payhook=app.payhook)
                await stack.enter_async_context(serving(operator, config.operator))
            yield state

    app.router.lifespan_context = lifespan
    return app


@asynccontextmanager
async def serving(app: ASGIApp, where: OperatorConfig) -> AsyncIterator[None]:
    """Serve `app` on `where`'s address with uvicorn until the context exits."""
    import uvicorn

    sock = _listen(where.host, where.port)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http="h11",
            lifespan="off",
            log_config=None,  # payhook's logging is set up already
            access_log=False,  # the operator app logs its own requests
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE),
        )
    )
    server.config.load()
    server.lifespan = server.config.lifespan_class(server.config)
    # Not server.serve(): that would install signal handlers over those of `payhook serve`,
    # which stops this listener by leaving the context instead.
    await server.startup(sockets=[sock])
    ticking = asyncio.create_task(server.main_loop(), name="payhook-operator")
    log.info("operator app on http://%s:%d", where.host, sock.getsockname()[1])
    try:
        yield
    finally:
        server.should_exit = True
        await ticking
        await server.shutdown(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a clear error (a port in use, say) before anything runs."""
    try:
        sock = listening_socket(host, port, 128)
    except OSError as exc:
        raise OSError(f"[operator] {exc}") from exc
    sock.setblocking(False)
    return sock
