"""The status page in a real headless Chromium: log in, read a failed run's error, press
Replay, and see the run succeed; and a 401 without the token.

It drives Debian's `chromium` through Playwright's Python client (never a browser that
Playwright downloads). CI installs chromium (.ci/run) and sets PAYHOOK_REQUIRE_CHROMIUM, so
there a missing browser fails the test; on a developer machine without it, it is skipped
and says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from payhook import create_operator_app
from payhook.config import OperatorConfig
from payhook.testing import wait_until
from payhook.testing.samples import load_event

from .helpers import RecordingPlugin, create_effect_table

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REQUIRE_ENV = "PAYHOOK_REQUIRE_CHROMIUM"
# `make test-fast` leaves these out (`-m "not browser"`).
pytestmark = pytest.mark.browser
TOKEN = "browser-test-operator-token-0123"


def missing_browser(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) or os.environ.get("CI"):
        pytest.fail(f"{reason}, and {REQUIRE_ENV} (or CI) says the status page must be tested", pytrace=False)
    pytest.skip(f"{reason}: the status page was NOT tested in a browser (apt-get install chromium)")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_browser(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_browser("Playwright's Python client is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_log_in_see_the_error_replay_and_see_it_succeed(
    browser: Any, make_payhook: Any, serve_in_thread: Any, tmp_path: Path
) -> None:
    plugin = RecordingPlugin("ledger")
    broken = {"on": True}
    plugin.fail("apply", lambda n: RuntimeError("ledger service unreachable") if broken["on"] else None)
    harness = make_payhook(
        {"ledger": plugin}, tenants={"pycon": {"plugins": ["ledger"]}}, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    event = load_event("payment_intent.succeeded")
    harness.deliver(event)
    harness.process()
    [run] = harness.runs()
    assert run.status == "dead"
    config = replace(harness.config, operator=OperatorConfig(token=TOKEN))
    url = serve_in_thread(create_operator_app(config, store=harness.store))

    page = browser.new_page()
    try:
        answer = page.goto(url + "/")
        assert answer is not None and answer.status == 401
        assert "ledger service unreachable" not in page.content()

        page.get_by_label("Operator token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(url + "/")
        failures = page.locator("#failures + table")
        assert "ledger service unreachable" in failures.inner_text()
        assert "RuntimeError" in failures.inner_text()
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)

        broken["on"] = False  # the operator fixed the ledger; now replay
        page.get_by_role("button", name=f"Replay run {run.id}").click()
        page.wait_for_url(url + f"/?replayed=1&run={run.id}")
        assert "1 run re-armed" in page.get_by_role("status").inner_text()
        harness.process()  # the worker's turn

        def succeeded_on_the_page() -> bool:
            page.goto(f"{url}/events/pycon/{event['id']}")
            return "succeeded" in page.locator("h2:has-text('Runs') + table").inner_text()

        wait_until(succeeded_on_the_page, what="the replayed run to show as succeeded")
        page.goto(url + "/")
        assert "No failed or dead runs." in page.content()
    finally:
        page.close()

    # Another browser, without the session: every page is 401.
    stranger = browser.new_page()
    try:
        for path in ("/", "/events", f"/events/pycon/{event['id']}", "/metrics"):
            answer = stranger.goto(url + path)
            assert answer is not None and answer.status == 401, path
    finally:
        stranger.close()


# The longest names and messages a status page meets: a 63-character slug (the most a tenant
# may have), errors of several hundred characters, some without a space to break at.
LONG_TENANTS = ("pycon-2027-registrations-and-refunds-for-the-europe-conference", "pycon-us-2027-sponsors")
LONG_ERRORS = (
    "RuntimeError: could not reach https://ledger.example.internal/api/v2/organisations/pycon/"
    "accounts/receivable/entries?expand=lines&filter=unpaid&page_size=500 " * 3,
    "x" * 400,  # no space anywhere
    "order 4242 does not exist in the registration database; the attendee record was "
    "deleted before the payment arrived, so there is nothing to mark as paid " * 2,
)


def test_the_pages_fit_a_1280_by_800_window_with_long_names_and_errors(
    browser: Any, make_payhook: Any, serve_in_thread: Any, stripe_event: Any, tmp_path: Path
) -> None:
    plugin = RecordingPlugin("ledger-and-registration-sync")
    messages = iter(LONG_ERRORS * len(LONG_TENANTS))
    plugin.fail("apply", lambda n: RuntimeError(next(messages)))
    tenants = {slug: {"plugins": ["ledger-and-registration-sync"]} for slug in LONG_TENANTS}
    harness = make_payhook(
        {"ledger-and-registration-sync": plugin}, tenants=tenants, processing={"max_attempts": 1}
    )
    create_effect_table(harness.store.engine)
    for slug in LONG_TENANTS:
        for _ in LONG_ERRORS:
            harness.deliver(stripe_event("payment_intent.succeeded"), tenant=slug)
    harness.process()
    assert {run.status for run in harness.runs()} == {"dead"}
    config = replace(harness.config, operator=OperatorConfig(token=TOKEN))
    url = serve_in_thread(create_operator_app(config, store=harness.store))
    failed_event = harness.runs()[0]

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(url + "/")
        page.get_by_label("Operator token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(url + "/")
        for path in (
            "/",
            "/events",
            f"/events?tenant={LONG_TENANTS[0]}",
            f"/events/{LONG_TENANTS[0]}/{failed_event.stripe_event_id}",
        ):
            page.goto(url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280, f"{path} is {width} px wide in a 1280 px window"
        page.goto(url + "/")
        page.screenshot(path=str(tmp_path / "status-page-1280.png"), full_page=True)
        for run in harness.runs():  # every Replay button is on screen, none cut off
            box = page.get_by_role("button", name=f"Replay run {run.id}").bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280
    finally:
        page.close()
