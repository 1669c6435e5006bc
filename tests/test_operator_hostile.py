"""The operator app against what a hostile or odd client sends it.

Event ids hold any storable string (the signed body or Stripe's API decides), so every page
must render them and link to them; the login form limits wrong guesses per client; and a
session ends on the server at logout, not only in the browser that logged out.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from markupsafe import escape
from payhook import create_operator_app
from payhook.config import OperatorConfig
from payhook.samples import load_event
from payhook.testing import PayhookHarness, store_backends, wait_until

from .helpers import RecordingPlugin, create_effect_table
from .processes import free_port

TOKEN = "operator-token-for-hostile-tests-0123"
BEARER = {"authorization": f"Bearer {TOKEN}", "accept": "text/html"}

# Each must be stored, listed, linked and opened as itself. "%41" and "%2F" would turn into
# "A" and "/" if anything decoded a link twice; "." and ".." are path segments browsers drop.
HOSTILE_IDS = [
    "evt_a/b",
    "evt_/leading/and/trailing/",
    "evt_q?x=1&y=2",
    "evt_frag#top",
    "evt_100%",
    "evt_%41%2F",
    "evt with spaces",
    "evt_ünïcødé_€_😀",
    'evt_<b>"quoted"</b>\'',
    "evt_back\\slash",
    "evt_a/../b",
    ".",
    "..",
]


@pytest.fixture
def serve_in_thread() -> Iterator[Any]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; returns its base URL.

    A real server, so that a link's path is decoded exactly once, as in production.
    """
    import uvicorn

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="operator-app", daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started or not thread.is_alive(), what="the operator app to listen")
        assert server.started
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


def operator_config(harness: PayhookHarness) -> Any:
    return replace(harness.config, operator=OperatorConfig(token=TOKEN))


def event_links(page: str) -> dict[str, str]:
    """Each event link on `page`: the id it shows -> its href (as the browser reads both)."""
    found = re.findall(r'<a href="(/events/[^"]*)">([^<]*)</a>', page)
    return {html.unescape(text): html.unescape(href) for href, text in found}


@store_backends
def test_events_with_hostile_ids_are_listed_linked_and_opened(
    make_payhook: Any, serve_in_thread: Any
) -> None:
    plugin = RecordingPlugin("rec")
    plugin.fail("apply", lambda n: RuntimeError("ledger offline"))
    harness = make_payhook(
        {"rec": plugin}, tenants={"ops": {"plugins": ["rec"]}}, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    for event_id in HOSTILE_IDS:
        event = {**load_event("payment_intent.succeeded"), "id": event_id}
        answer = harness.deliver(event)  # signed with the tenant's secret, verified for real
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    harness.process()
    assert {run.status for run in harness.runs()} == {"dead"}  # each in the failures table too

    url = serve_in_thread(create_operator_app(operator_config(harness), store=harness.store))
    with httpx.Client(base_url=url, headers=BEARER, timeout=10) as client:
        overview = client.get("/")
        assert overview.status_code == 200, overview.text
        events = client.get("/events")
        assert events.status_code == 200, events.text
        # The failed runs and the recent events on the overview (ten of them), and the list.
        links = {**event_links(overview.text), **event_links(events.text)}
        assert set(links) == set(HOSTILE_IDS)
        for event_id, href in links.items():
            assert not set(href.removeprefix("/events/ops/")) & set("/#\\ <>\"'"), href
            page = client.get(href)
            assert page.status_code == 200, (event_id, href, page.text)
            assert f'<span class="muted">{escape(event_id)}</span>' in page.text, event_id
            assert "ledger offline" in page.text
            # Its replay button comes back to this same page.
            back = re.search(r'name="back" value="([^"]*)"', page.text)
            assert back is not None and html.unescape(back.group(1)) == href
        assert "<b>" not in events.text and "&lt;b&gt;" in events.text
