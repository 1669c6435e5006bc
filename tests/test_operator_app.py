"""The operator app over HTTP: the token on every page and action, sessions, CSRF, replay.

`test_status_page_browser.py` drives the same pages in a real Chromium.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from typing import Any

import pytest
from payhook import ConfigError, create_operator_app
from payhook.config import OperatorConfig
from payhook.operator.auth import SESSION_COOKIE, Auth
from payhook.testing import PayhookHarness, store_backends, wait_until
from payhook.testing.samples import load_event
from starlette.applications import Starlette
from starlette.routing import Mount

from .helpers import RecordingPlugin, create_effect_table

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "operator-token-for-the-tests-0123"
HTML = {"accept": "text/html"}
BEARER = {"authorization": f"Bearer {TOKEN}"}


class Scene:
    def __init__(self, harness: PayhookHarness, plugin: RecordingPlugin, event: dict[str, Any]) -> None:
        self.harness = harness
        self.plugin = plugin
        self.event = event
        self.config = replace(harness.config, operator=OperatorConfig(token=TOKEN))

    def client(self, app: Any = None) -> TestClient:
        app = app or create_operator_app(self.config, payhook=self.harness.app.payhook)
        # https: the session cookie is Secure, so the client only sends it back over TLS.
        return TestClient(app, base_url="https://testserver", follow_redirects=False)

    def run_status(self) -> str:
        [run] = self.harness.runs(self.event["id"])
        return run.status


@pytest.fixture
def scene(make_payhook: Any) -> Scene:
    plugin = RecordingPlugin("rec")
    broken = {"on": True}
    plugin.fail("apply", lambda n: RuntimeError("ledger offline") if broken["on"] else None)
    plugin.broken = broken  # type: ignore[attr-defined]
    harness = make_payhook(
        {"rec": plugin}, tenants={"ops": {"plugins": ["rec"]}}, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded")
    harness.deliver(event)
    harness.process()
    return Scene(harness, plugin, event)


def log_in(client: TestClient) -> str:
    """Log in through the form; returns the CSRF token the overview's forms carry."""
    answer = client.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    page = client.get("/", headers=HTML)
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert match is not None
    return match.group(1)


ROUTES = [
    ("GET", "/"),
    ("GET", "/events"),
    ("GET", "/events/ops/evt_x"),
    ("GET", "/metrics"),
    ("POST", "/replay"),
    ("POST", "/logout"),
]


@store_backends
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_page_and_action_needs_the_token(scene: Scene, method: str, path: str) -> None:
    with scene.client() as client:
        for headers in ({}, HTML, {"authorization": "Bearer wrong-token"}, {"authorization": TOKEN}):
            answer = client.request(method, path, headers=headers, data={"run": "1"})
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in answer.text
        assert scene.run_status() == "dead"


def test_a_person_without_the_token_gets_the_login_form(scene: Scene) -> None:
    with scene.client() as client:
        page = client.get("/", headers=HTML)
        assert page.status_code == 401 and '<form method="post" action="/login">' in page.text
        wrong = client.post("/login", data={"token": "not-it"})
        assert wrong.status_code == 401 and "That is not the operator token." in wrong.text
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")


def test_bearer_token_for_scripts(scene: Scene) -> None:
    with scene.client() as client:
        assert client.get("/", headers=BEARER).status_code == 200
        metrics = client.get("/metrics", headers=BEARER)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'payhook_dead_runs{plugin="rec",tenant="ops"} 1.0' in metrics.text
        assert "payhook_deliveries_total" in metrics.text
        # A script needs no CSRF token: no browser adds an Authorization header by itself.
        answer = client.post("/replay", headers=BEARER, data={"run": "1"})
        assert answer.status_code == 303
    assert scene.run_status() == "pending"
    [run] = scene.harness.runs()
    assert run.replayed_by == "operator:api"


@store_backends
def test_log_in_see_the_error_replay_and_see_it_succeed(scene: Scene) -> None:
    with scene.client() as client:
        answer = client.post("/login", data={"token": TOKEN})
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert (
            "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        )
        assert TOKEN not in cookie
        csrf = log_in(client)
        page = client.get("/", headers=HTML).text
        assert "ledger offline" in page and "RuntimeError" in page and "Replay" in page

        scene.plugin.broken["on"] = False  # type: ignore[attr-defined]
        refused = client.post("/replay", data={"run": "1", "csrf": "forged"})
        assert refused.status_code == 403 and scene.run_status() == "dead"
        replayed = client.post("/replay", data={"run": "1", "csrf": csrf, "back": "/"})
        assert replayed.status_code == 303 and replayed.headers["location"] == "/?replayed=1&run=1"
        # No worker in this process: the run waits for one.
        notice = client.get("/?replayed=1&run=1", headers=HTML).text
        assert "1 run re-armed; the worker runs it next" in notice
        assert scene.run_status() == "pending"
        scene.harness.process()
        assert scene.run_status() == "succeeded"
        detail = client.get(f"/events/ops/{scene.event['id']}", headers=HTML).text
        assert "succeeded" in detail and "ledger offline" in detail  # the failed attempt stays in the history


@pytest.mark.parametrize("fixed", [False, True])
def test_the_replay_notice_says_what_became_of_the_run(make_payhook: Any, fixed: bool) -> None:
    """Beside an in-process worker the replayed run runs at once: the notice says how it went,
    not that the worker runs it next."""
    plugin = RecordingPlugin("rec")
    broken = {"on": True}
    plugin.fail("apply", lambda n: RuntimeError(f"ledger offline (call {n})") if broken["on"] else None)
    harness = make_payhook(
        {"rec": plugin}, tenants={"ops": {"plugins": ["rec"]}}, processing={"max_attempts": 1, "worker": True}
    )
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded")
    harness.deliver(event)
    wait_until(lambda: [run.status for run in harness.runs()] == ["dead"], what="the run to die")
    scene = Scene(harness, plugin, event)
    broken["on"] = not fixed
    with scene.client() as client:
        csrf = log_in(client)
        replayed = client.post("/replay", data={"run": "1", "csrf": csrf, "back": "/"})
        location = replayed.headers["location"]
        assert location == "/?replayed=1&run=1"
        expected = "and run 1 succeeded" if fixed else "but run 1 failed again and is dead"

        def notice() -> str:
            page = client.get(location, headers=HTML).text
            [shown] = re.findall(r'<p class="notice[^"]*" role="status">(.*?)</p>', page, re.S)
            return shown

        wait_until(lambda: expected in notice(), what=f"the notice to say {expected!r}")
        assert "runs it next" not in notice()
        if not fixed:
            assert "RuntimeError" in notice() and "ledger offline (call 2)" in notice()
        event_page = client.get(f"/events/ops/{event['id']}?replayed=1&run=1", headers=HTML).text
        assert expected in event_page


def test_a_replay_never_redirects_to_another_site(scene: Scene) -> None:
    with scene.client() as client:
        csrf = log_in(client)
        for back in ("//evil.example/", "https://evil.example/", "\\\\evil.example"):
            answer = client.post("/replay", data={"run": "1", "csrf": csrf, "back": back})
            assert answer.headers["location"].startswith("/?replayed=")


def test_sessions_end_with_logout_expiry_or_a_new_token(scene: Scene) -> None:
    app = create_operator_app(scene.config, payhook=scene.harness.app.payhook)
    with scene.client(app) as client:
        csrf = log_in(client)
        assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
        out = client.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and 'payhook_operator=""' in out.headers["set-cookie"]
        assert client.get("/", headers=HTML).status_code == 401
    auth: Auth = app.state.operator.auth
    expired = auth.new_session(now=0)
    with scene.client(app) as client:
        client.cookies.set(SESSION_COOKIE, expired)
        assert client.get("/", headers=HTML).status_code == 401
        client.cookies.set(SESSION_COOKIE, Auth("another-token-0123456789", auth.sessions).new_session())
        assert client.get("/", headers=HTML).status_code == 401
        valid = auth.new_session()
        client.cookies.set(SESSION_COOKIE, valid[:-1] + ("0" if valid[-1] != "0" else "1"))
        assert client.get("/", headers=HTML).status_code == 401
        client.cookies.set(SESSION_COOKIE, valid)
        assert client.get("/", headers=HTML).status_code == 200


def test_pages_events_and_security_headers(scene: Scene) -> None:
    with scene.client() as client:
        log_in(client)
        listing = client.get("/events?tenant=ops&status=dead", headers=HTML)
        assert scene.event["id"] in listing.text
        assert scene.event["id"] not in client.get("/events?status=succeeded", headers=HTML).text
        detail = client.get(f"/events/ops/{scene.event['id']}", headers=HTML)
        assert (
            "Traceback (most recent call last)" in detail.text
            and "&#34;object&#34;: &#34;event&#34;" in detail.text
        )
        assert client.get("/events/ops/evt_missing", headers=HTML).status_code == 404
        headers = client.get("/", headers=HTML).headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]  # no script at all
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


def test_mounted_under_a_prefix(scene: Scene) -> None:
    host = Starlette(routes=[Mount("/ops", app=create_operator_app(scene.config, store=scene.harness.store))])
    with scene.client(host) as client:
        answer = client.post("/ops/login", data={"token": TOKEN})
        assert answer.headers["location"] == "/ops/"
        assert "Path=/ops/" in answer.headers["set-cookie"]
        page = client.get("/ops/", headers=HTML).text
        assert 'action="/ops/replay"' in page and f'href="/ops/events/ops/{scene.event["id"]}"' in page


def test_the_operator_app_needs_its_token(scene: Scene) -> None:
    with pytest.raises(ConfigError, match=r"operator\.token"):
        create_operator_app(scene.harness.config)
    with pytest.raises(ConfigError):
        create_operator_app(replace(scene.config, operator=OperatorConfig(token=None)))
