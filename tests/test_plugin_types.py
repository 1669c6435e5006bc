"""The bundled plugins type-check with `mypy --strict`, through payhook's public names.

The lint env is where this belongs (it has mypy); elsewhere the test is skipped. A freshly
generated plugin is checked the same way in test_scaffold.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(str(path) for path in ROOT.glob("plugins/*/src"))


@pytest.mark.skipif(find_spec("mypy") is None, reason="mypy is not installed here (tox -e lint has it)")
@pytest.mark.timeout(300)
def test_the_bundled_plugins_are_mypy_strict_clean(mypy_cache_dir: Path) -> None:
    assert SOURCES, "no bundled plugins found"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(mypy_cache_dir), *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A third-party plugin typed as docs/hooks.md and docs/writing-a-plugin.md show: thin handlers
# typed with the SDK's classes (with and without postponed annotations), `fetch_latest()`
# read as documented, and tests annotated with the fixtures' types.
AUTHOR_HANDLERS = """
import stripe
from payhook import Event, HandlerContext, Register, hookimpl
from stripe.events import V1BillingMeterErrorReportTriggeredEventNotification
from stripe.v2.core import EventNotification


def on_error_report(event: V1BillingMeterErrorReportTriggeredEventNotification, ctx: HandlerContext) -> None:
    meter = event.fetch_related_object()
    ctx.logger.info("meter %s", meter.id)


def on_thin(event: EventNotification, ctx: HandlerContext) -> None:
    ctx.logger.info("thin event %s", event.id)


def on_payment(event: Event, ctx: HandlerContext) -> None:
    latest = ctx.fetch_latest()
    status: str = latest["status"]
    plain = latest.to_dict()
    ctx.logger.info("%s in %s", status, plain.get("currency"))
    if isinstance(latest, stripe.PaymentIntent):
        ctx.logger.info("%s", latest.status)


def on_charge(event: stripe.Event, ctx: HandlerContext) -> None:
    ctx.logger.info("%s", event.type)


@hookimpl
def register_handlers(register: Register) -> None:
    register("v1.billing.meter.error_report_triggered", on_error_report)
    register("v1.*", on_thin, name="thin")
    register("payment_intent.succeeded", on_payment)
    register("charge.*", on_charge)
"""

AUTHOR_TESTS = """
import httpx
from payhook.testing import MakePayhook, StripeAPIRouter, StripeEventFactory, load_thin_event, store_backends


@store_backends
def test_both_kinds(
    make_payhook: MakePayhook, stripe_event: StripeEventFactory, stripe_api: StripeAPIRouter
) -> None:
    harness = make_payhook({})
    stripe_api.get("/v1/payment_intents/pi_1").mock(return_value=httpx.Response(200, json={}))
    runs = harness.send(stripe_event("payment_intent.succeeded", data__object__id="pi_1"))
    thin = harness.send(load_thin_event(), thin=True)
    assert [run.status for run in runs + thin] == []
"""

# Each line ending in `# error: CODE` must be reported with that code, and nothing else.
AUTHOR_MISTAKES = """
from typing import Any

from payhook import HandlerContext, Register, hookimpl


def takes_a_dict(event: dict[str, Any], ctx: HandlerContext) -> None: ...


def reads_it_as_a_dict(event: Any, ctx: HandlerContext) -> None:
    ctx.fetch_latest().get("status")  # error: attr-defined


@hookimpl
def register_handlers(register: Register) -> None:
    register("payment_intent.succeeded", takes_a_dict)  # error: type-var
"""


@pytest.mark.skipif(find_spec("mypy") is None, reason="mypy is not installed here (tox -e lint has it)")
@pytest.mark.timeout(300)
def test_a_plugin_typed_as_the_docs_show_is_mypy_strict_clean_and_its_mistakes_are_caught(
    tmp_path: Path, mypy_cache_dir: Path
) -> None:
    sources = {
        "handlers_postponed.py": "from __future__ import annotations\n" + AUTHOR_HANDLERS,
        "handlers_evaluated.py": AUTHOR_HANDLERS,
        "test_author.py": AUTHOR_TESTS,
        "mistakes.py": AUTHOR_MISTAKES,
    }
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(mypy_cache_dir), *sources],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    reported = sorted(re.findall(r"^(\S+\.py):(\d+): error: .*\[([\w-]+)\]$", result.stdout, re.MULTILINE))
    expected = sorted(
        (name, str(number), match.group(1))
        for name, text in sources.items()
        for number, line in enumerate(text.splitlines(), start=1)
        if (match := re.search(r"# error: ([\w-]+)$", line))
    )
    assert reported == expected, result.stdout + result.stderr
