"""`create_operator_app`: the status page, the replay button and `/metrics`, behind the token."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payhook.config import Config, ConfigError
from payhook.logs import Fields
from payhook.operator import pages
from payhook.operator.auth import Auth
from payhook.operator.metrics import exposition_registry
from payhook.operator.sessions import SessionStore
from payhook.store.engine import Store, StoreUnavailable

if TYPE_CHECKING:
    from payhook.receive.runtime import Payhook

__all__ = ["create_operator_app"]

access_log = logging.getLogger("payhook.operator.access")


def create_operator_app(
    config: Config, *, store: Store | None = None, payhook: Payhook | None = None
) -> Starlette:
    """The operator app for `config` (which must have an `[operator]` table with a token).

    Standalone it opens its own store. Next to a payhook app, pass its runtime
    (`payhook=app.payhook`): the operator app then shares its store, and a replay wakes its
    worker at once.
    """
    operator = config.operator
    if operator is None or operator.token is None:
        raise ConfigError(
            [f"{config.source}: operator.token: the operator app needs [operator] with a token"]
        )
    own_store = store is None and payhook is None
    shared = payhook.store if payhook is not None else store
    the_store = shared if shared is not None else Store(config.database)

    def wake_worker() -> bool:
        if payhook is not None and payhook.worker is not None:
            payhook.worker.notify()
            return True
        return False

    state = pages.OperatorState(
        config=config,
        store=the_store,
        auth=Auth(operator.token, SessionStore(the_store)),
        templates=_templates(),
        registry=exposition_registry(the_store),
        wake_worker=wake_worker if payhook is not None else None,
    )

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_store:
                the_store.dispose()

    app = Starlette(
        routes=[
            Route("/", pages.overview, methods=["GET"], name="overview"),
            Route("/events", pages.events_page, methods=["GET"], name="events"),
            # `path`: an event id may hold a `/` (links encode it; a server decodes it).
            Route("/events/{tenant}/{event_id:path}", pages.event_page, methods=["GET"], name="event"),
            Route("/replay", pages.replay_run, methods=["POST"], name="replay"),
            Route("/login", pages.login, methods=["GET", "POST"], name="login"),
            Route("/logout", pages.logout, methods=["POST"], name="logout"),
            Route("/metrics", pages.metrics, methods=["GET"], name="metrics"),
        ],
        lifespan=lifespan,
        exception_handlers={StoreUnavailable: pages.store_unavailable},
    )
    app.state.operator = state
    app.add_middleware(_Hardened)
    return app


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("payhook.operator", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["tojson_pretty"] = _pretty_json
    env.globals["event_url"] = _event_url
    return Jinja2Templates(env=env)


def _pretty_json(text: str) -> str:
    return json.dumps(json.loads(text), indent=2)


@jinja2.pass_context
def _event_url(context: jinja2.runtime.Context, tenant: str, event_id: str) -> str:
    """`event_url(tenant, id)` in a template: the link to that event's page."""
    return pages.event_path(context["request"], tenant, event_id)


class _Hardened:
    """Security headers on every answer, and one access log line per request.

    The page's only inline code is its stylesheet, allowed by a per-response nonce; no
    script runs at all. The log line has the method, the path (never the query or a header,
    so never the token) and the outcome.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(12)
        scope["payhook_csp_nonce"] = nonce
        started = time.perf_counter()
        status = 500

        async def send_hardened(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _csp(nonce)),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        finally:
            facts = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            access_log.info(Fields("request", facts))


def _csp(nonce: str) -> bytes:
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ).encode()
