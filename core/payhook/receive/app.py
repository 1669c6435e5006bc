"""`create_app`: the ASGI app around a payhook runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from payhook.config import Config
from payhook.receive.ingest import healthz, receive, receive_thin
from payhook.receive.routing import JSON_ERROR_HANDLERS, TenantRoute
from payhook.receive.runtime import Payhook
from payhook.store.engine import Store

__all__ = ["Payhook", "PayhookApp", "create_app"]


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
