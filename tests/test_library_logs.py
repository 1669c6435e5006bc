"""The HTTP and Stripe libraries' own log lines never carry a secret.

httpx logs every request's URL at INFO, and a Slack webhook URL is a secret; the Stripe SDK
logs each API call. Here every bundled plugin and a Stripe API call run with secrets set,
with the root logger at payhook's default level and at DEBUG, and every line is searched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import payhook_disputes
import payhook_notify
import payhook_registration
import pytest
import respx
from payhook import HandlerContext, hookimpl, logs
from payhook.config import LoggingConfig
from payhook.testing import MakePayhook, store_backends

HOOK_SECRET = "T0SECRET/B0SECRET/hooksecretpart9f8e7d"
HOOK_URL = f"https://hooks.slack.test/services/{HOOK_SECRET}"
API_KEY = "rk_test_SECRETapikey0a1b2c3d4e"
SECRETS = (HOOK_SECRET, "hooksecretpart", API_KEY, "SECRETapikey")


class LatestPlugin:
    """Asks Stripe for the object's current state: one API call per run."""

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("payment_intent.succeeded", self.handle, name="latest")

    def handle(self, event: Any, ctx: HandlerContext) -> None:
        ctx.fetch_latest()


@pytest.fixture
def all_lines() -> Iterator[list[str]]:
    """Every line any logger writes during the test, formatted as payhook formats it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    collect = Collect()
    collect.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    try:
        root.handlers[:] = [collect]
        yield lines
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@store_backends
@pytest.mark.parametrize("level", ["info", "debug"])
def test_no_library_line_carries_a_secret(
    make_payhook: MakePayhook, stripe_event: Any, all_lines: list[str], level: str
) -> None:
    logging.getLogger().setLevel(LoggingConfig(level=level).level.upper())
    tenant = {
        "plugins": ["notify", "registration", "disputes", "latest"],
        "stripe_api_key": API_KEY,
        "plugin_config": {"notify": {"url": HOOK_URL, "events": ["*"]}},
    }
    harness = make_payhook(
        {
            "notify": payhook_notify,
            "registration": payhook_registration,
            "disputes": payhook_disputes,
            "latest": LatestPlugin(),
        },
        tenants={"shop": tenant},
        processing={"max_attempts": 1},
    )
    with respx.mock(assert_all_called=True) as router:
        chat = router.post(HOOK_URL).respond(200, text="ok")
        stripe = router.get(url__regex=r"https://api\.stripe\.com/v1/payment_intents/.*").mock(
            return_value=httpx.Response(200, json={"id": "pi_x", "object": "payment_intent"})
        )
        for event_type in ("payment_intent.succeeded", "charge.dispute.created"):
            harness.send(stripe_event(event_type))
    assert chat.called and stripe.called
    # The calls were logged (at DEBUG), only cut short: the check below searched real lines.
    if level == "debug":
        assert any("httpx" in line and "hooks.slack.test/…" in line for line in all_lines)
        assert any("stripe" in line for line in all_lines)
    else:
        assert not [line for line in all_lines if " INFO httpx:" in line or " INFO stripe:" in line]
    text = "\n".join(all_lines)
    for secret in SECRETS:
        assert secret not in text


def test_redact_keeps_the_origin_and_hides_keys() -> None:
    assert (
        logs.redact(f'POST {HOOK_URL} "HTTP/1.1 200 OK"')
        == 'POST https://hooks.slack.test/… "HTTP/1.1 200 OK"'
    )
    assert logs.redact("GET https://api.stripe.com") == "GET https://api.stripe.com"
    assert logs.redact(f"api_key={API_KEY} secret=whsec_abc123") == "api_key=[redacted] secret=[redacted]"
    assert logs.redact("client_secret=pi_123_secret_456") == "client_secret=[redacted]"


def test_a_library_error_with_a_url_is_redacted_with_its_traceback(all_lines: list[str]) -> None:
    logging.getLogger().setLevel(logging.INFO)
    try:
        raise httpx.HTTPError(f"could not post to {HOOK_URL}")
    except httpx.HTTPError:
        logging.getLogger("httpx").warning("failed: %s", HOOK_URL, exc_info=True)
    [line] = ["\n".join(all_lines)]
    assert "WARNING httpx: failed: https://hooks.slack.test/…" in line
    assert "could not post to https://hooks.slack.test/…" in line
    for secret in SECRETS:
        assert secret not in line
