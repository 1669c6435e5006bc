"""The operator app against what a hostile or odd client sends it.

Event ids hold any storable string (the signed body or Stripe's API decides), so every page
must render them and link to them; the login form limits wrong guesses per client; and a
session ends on the server at logout, not only in the browser that logged out.
"""

from __future__ import annotations

import html
import re
import warnings
from dataclasses import replace
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from markupsafe import escape
from payhook import create_operator_app
from payhook.config import OperatorConfig
from payhook.operator.auth import SESSION_COOKIE
from payhook.operator.sessions import SESSION_TABLE
from payhook.operator.throttle import LoginThrottle, client_key
from payhook.store.migrations import upgrade
from payhook.testing import PayhookHarness, store_backends
from payhook.testing.samples import load_event
from sqlalchemy import create_engine, func, inspect, select

from .helpers import RecordingPlugin, create_effect_table

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

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


# -- the login form ---------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def harness(make_payhook: Any) -> PayhookHarness:
    harness: PayhookHarness = make_payhook({}, tenants={"ops": {}})
    return harness


def operator_client(app: Any, address: str = "203.0.113.7") -> TestClient:
    # https: the session cookie is Secure, so the client only sends it back over TLS.
    return TestClient(app, base_url="https://testserver", follow_redirects=False, client=(address, 50000))


def test_wrong_tokens_are_limited_per_client(harness: PayhookHarness) -> None:
    app = create_operator_app(operator_config(harness), store=harness.store)
    clock = Clock()
    app.state.operator.login_throttle = LoginThrottle(clock=clock)
    with operator_client(app) as guesser, operator_client(app, "198.51.100.2") as colleague:
        answers = [guesser.post("/login", data={"token": f"guess-{n}"}).status_code for n in range(300)]
        assert answers == [401] * 10 + [429] * 290
        refused = guesser.post("/login", data={"token": TOKEN}, headers={"accept": "text/html"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        assert "try again in 60 seconds" in refused.text
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        assert colleague.post("/login", data={"token": TOKEN}).status_code == 303  # others are not locked out

        clock.now += 30
        assert guesser.post("/login", data={"token": "again"}).headers["retry-after"] == "30"
        clock.now += 30  # the first ten wrong tokens are a minute old
        assert guesser.post("/login", data={"token": TOKEN}).status_code == 303
        assert guesser.get("/", headers={"accept": "text/html"}).status_code == 200


def test_wrong_bearer_tokens_count_as_guesses_too(harness: PayhookHarness) -> None:
    app = create_operator_app(operator_config(harness), store=harness.store)
    app.state.operator.login_throttle = LoginThrottle(clock=Clock())
    with operator_client(app) as colleague, operator_client(app) as guesser:  # one address
        assert colleague.post("/login", data={"token": TOKEN}).status_code == 303
        for n in range(5):
            assert guesser.post("/login", data={"token": f"guess-{n}"}).status_code == 401
            assert guesser.get("/metrics", headers={"authorization": f"Bearer guess-{n}"}).status_code == 401
        for path in ("/metrics", "/events"):
            throttled = guesser.get(path, headers={"authorization": f"Bearer {TOKEN}"})
            assert throttled.status_code == 429 and throttled.headers["retry-after"] == "60"
        # A session guesses nothing: it still opens the pages from that address.
        assert colleague.get("/events", headers={"accept": "text/html"}).status_code == 200


def test_the_table_of_clients_stays_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_clients=100)
    for n in range(10_000):
        throttle.failed(client_key(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"))
        clock.now += 0.001
    assert len(throttle) == 100
    blocked = client_key("192.0.2.1")
    for _ in range(10):
        throttle.failed(blocked)
    assert throttle.retry_after(blocked) == 60 and len(throttle) == 100
    clock.now += 60
    assert throttle.retry_after(blocked) is None and len(throttle) == 99  # forgotten once it may try


def test_an_ipv6_network_counts_as_one_client() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"


# -- sessions ---------------------------------------------------------------------------


def session_rows(harness: PayhookHarness) -> int:
    with harness.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(SESSION_TABLE)).scalar_one())


@store_backends
def test_a_cookie_kept_after_logout_is_refused_by_every_process(harness: PayhookHarness) -> None:
    config = operator_config(harness)
    # Two operator apps, each with its own engine on the same database: two processes.
    first, second = create_operator_app(config), create_operator_app(config, store=harness.store)
    with operator_client(first) as browser, operator_client(second) as elsewhere:
        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        cookie = browser.cookies[SESSION_COOKIE]
        elsewhere.cookies.set(SESSION_COOKIE, cookie)
        assert elsewhere.get("/", headers={"accept": "text/html"}).status_code == 200
        page = browser.get("/", headers={"accept": "text/html"})
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert match is not None
        assert browser.post("/logout", data={"csrf": match.group(1)}).status_code == 303
        assert session_rows(harness) == 0

        # Someone kept a copy of the cookie: it no longer opens anything, anywhere.
        for client in (browser, elsewhere):
            client.cookies.set(SESSION_COOKIE, cookie)
            assert client.get("/", headers={"accept": "text/html"}).status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.post("/replay", data={"run": "1", "csrf": match.group(1)}).status_code == 401


def test_expired_sessions_are_forgotten_at_the_next_login(harness: PayhookHarness) -> None:
    app = create_operator_app(operator_config(harness), store=harness.store)
    with operator_client(app) as client:
        auth = app.state.operator.auth
        for _ in range(3):
            auth.new_session(now=0)  # expired since 1970
        assert session_rows(harness) == 3
        assert client.post("/login", data={"token": TOKEN}).status_code == 303
        assert session_rows(harness) == 1
        assert "csrf" in client.get("/", headers={"accept": "text/html"}).text


@store_backends
def test_the_migration_makes_the_session_table_the_code_uses(payhook_database_url: str) -> None:
    engine = create_engine(payhook_database_url)
    try:
        upgrade(engine, include_plugins=False)
        assert SESSION_TABLE.name in inspect(engine).get_table_names()

        def the_sessions(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
            table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
            return table == SESSION_TABLE.name

        with engine.connect() as conn:
            options = {"compare_type": True, "include_object": the_sessions}
            diffs = compare_metadata(MigrationContext.configure(conn, opts=options), SESSION_TABLE.metadata)
        assert diffs == []
    finally:
        engine.dispose()
