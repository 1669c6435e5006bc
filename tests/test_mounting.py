"""payhook mounted under a host Starlette app, with and without the host running its lifespan."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from payhook import PayhookApp, create_app
from payhook.store.migrations import upgrade
from payhook.testing import build_config, signed_headers
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from .helpers import RecordingPlugin, create_effect_table, effects


def payhook_app(tmp_path: Path, plugin: RecordingPlugin) -> PayhookApp:
    config = build_config(
        f"sqlite:///{tmp_path / 'host.db'}", plugins={"rec": plugin}, processing={"worker": True}
    )
    app = create_app(config, {"rec": plugin})
    upgrade(app.payhook.store.engine)
    create_effect_table(app.payhook.store.engine)
    return app


def wait_for_effects(app: PayhookApp, count: int) -> list[Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(effects(app.payhook.store.engine)) < count:
        time.sleep(0.05)
    return effects(app.payhook.store.engine)


def home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("host")


def test_mounted_with_the_hosts_lifespan(tmp_path: Path, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    webhooks = payhook_app(tmp_path, plugin)
    entered: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with webhooks.lifespan(app):
            entered.append("payhook started")
            yield

    host = Starlette(routes=[Route("/", home), Mount("/stripe", app=webhooks)], lifespan=lifespan)
    body = json.dumps(stripe_event("payment_intent.succeeded")).encode()
    with TestClient(host) as client:
        assert entered == ["payhook started"]
        assert client.get("/").text == "host"
        assert client.get("/stripe/healthz").json() == {"status": "ok"}
        response = client.post("/stripe/test", content=body, headers=signed_headers(body))
        assert response.json()["status"] == "accepted"
        assert len(wait_for_effects(webhooks, 1)) == 1
    assert webhooks.payhook._started is False  # the host's shutdown stopped it


def test_mounted_without_lifespan_starts_on_first_request_once(tmp_path: Path, stripe_event: Any) -> None:
    plugin = RecordingPlugin("rec")
    webhooks = payhook_app(tmp_path, plugin)
    host = Starlette(routes=[Mount("/stripe", app=webhooks)])  # Starlette skips mounted lifespans
    starts: list[int] = []
    original = webhooks.payhook.start

    async def counting_start() -> None:
        starts.append(1)
        await original()

    webhooks.payhook.start = counting_start  # type: ignore[method-assign]
    events = [stripe_event("payment_intent.succeeded") for _ in range(10)]

    async def first_requests() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            bodies = [json.dumps(event).encode() for event in events]
            return await asyncio.gather(
                *(client.post("/stripe/test", content=b, headers=signed_headers(b)) for b in bodies)
            )

    with TestClient(host) as client:
        responses = client.portal.call(first_requests)
        assert {r.json()["status"] for r in responses} == {"accepted"}
        assert starts == [1]
        assert len(wait_for_effects(webhooks, 10)) == 10
