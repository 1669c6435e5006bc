"""`create_app`: the ASGI app around a payhook runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from payhook.config import RESERVED_SLUGS, Config
from payhook.receive.ingest import healthz, receive, receive_thin
from payhook.receive.routing import JSON_ERROR_HANDLERS, TenantRoute, server_error
from payhook.receive.runtime import Payhook
from payhook.store.engine import Store

__all__ = ["Payhook", "PayhookApp", "create_app"]


THIN_SUFFIX = "/thin"
Endpoint = Callable[[Request], Awaitable[Response]]


class PayhookApp(Starlette):
    """The Starlette app, with its runtime at `.payhook` and `.lifespan` for hosts.

    A delivery (`POST /{tenant}`, `POST /{tenant}/thin`) goes straight to its endpoint, with
    the answers Starlette's layers would give (a crash is the 500 of `server_error`, then
    raised for the server to log): routing it through the exception middlewares and the
    router costs about as much CPU as verifying its signature. Everything else, and
    everything once a host has added middleware or changed the app, takes Starlette's path.
    """

    payhook: Payhook
    _deliveries_direct: bool | None = None  # decided at the first request, as Starlette's stack is

    def lifespan(self, app: Any = None) -> Any:
        """Enter this from a host app's lifespan when payhook is mounted."""
        return self.payhook.lifespan(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._deliveries_direct is None:
            self._deliveries_direct = self._untouched()
        endpoint = self._delivery_endpoint(scope) if self._deliveries_direct else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            await (await server_error(request, exc))(scope, receive, send)
            raise
        await response(scope, receive, send)

    def _untouched(self) -> bool:
        """Whether the app is still as create_app made it: no middleware, handlers or routes
        of a host's, no debug pages."""
        routes = [(type(route), getattr(route, "path", None)) for route in self.router.routes]
        return (
            not self.debug
            and not self.user_middleware
            and self.exception_handlers == JSON_ERROR_HANDLERS
            and routes == [(Route, "/healthz"), (TenantRoute, "/{tenant}"), (TenantRoute, "/{tenant}/thin")]
        )

    @staticmethod
    def _delivery_endpoint(scope: Scope) -> Endpoint | None:
        """The endpoint the router would pick for a delivery, with the scope it would set;
        None for anything else, which the router then sees."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if path.count("/") == 1:
            tenant, endpoint = path[1:], receive
        elif path.count("/") == 2 and path.endswith(THIN_SUFFIX):
            tenant, endpoint = path[1 : -len(THIN_SUFFIX)], receive_thin
        else:
            return None
        if not path.startswith("/") or not tenant or tenant in RESERVED_SLUGS:
            return None
        scope["endpoint"] = endpoint
        scope["path_params"] = {"tenant": tenant}
        return endpoint


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
    payhook.receives = True
    app = PayhookApp(
        debug=debug,
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            TenantRoute("/{tenant}", receive, methods=["POST"]),
            TenantRoute("/{tenant}/thin", receive_thin, methods=["POST"]),
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
