"""One ASGI app: payhook under a prefix, Django everywhere else, payhook's lifespan run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from payhook.receive.app import PayhookApp

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["PayhookDispatcher", "asgi"]


def asgi(
    django_application: ASGIApp, prefix: str = "/stripe/", *, webhooks: PayhookApp | None = None
) -> PayhookDispatcher:
    """Serve payhook under `prefix` (Stripe posts to `<prefix><tenant>`) and Django elsewhere.

    payhook's app is built from settings.PAYHOOK_CONFIG (its store, its worker per
    `[processing] worker`) unless given. The server's lifespan starts and stops payhook;
    Django's ASGI handler, which refuses lifespan, never sees it.
    """
    if webhooks is None:
        from payhook import create_app

        from payhook_django.runtime import load

        webhooks = create_app(load())
    return PayhookDispatcher(django_application, webhooks, prefix)


class PayhookDispatcher:
    def __init__(self, django_application: ASGIApp, webhooks: PayhookApp, prefix: str) -> None:
        self.django = django_application
        self.webhooks = webhooks
        self.prefix = "/" + prefix.strip("/")
        self.payhook = webhooks.payhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            root = scope.get("root_path", "")
            inner = dict(scope, root_path=root + self.prefix, path=path[len(self.prefix) :] or "/")
            await self.webhooks(inner, receive, send)
            return
        await self.django(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start payhook at startup, stop it gracefully at shutdown."""
        message = await receive()
        assert message["type"] == "lifespan.startup"
        context = self.webhooks.lifespan(self.webhooks)
        try:
            await context.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"payhook: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        try:
            await context.__aexit__(None, None, None)
        except Exception as exc:
            await send({"type": "lifespan.shutdown.failed", "message": f"payhook: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})
