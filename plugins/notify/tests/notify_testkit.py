"""Helpers for payhook-notify's tests: the tenant, the chat service's URL, and `run_status`.

They live here, not in conftest.py, so that test modules import them by a name no other
suite uses: every suite can then be collected in one pytest run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payhook.testing import PayhookHarness

TENANT = "pycon"
# Slack's incoming-webhook URLs carry their secret in the path.
HOOK_URL = "https://hooks.slack.test/services/T000/B000/not-a-real-secret"


def run_status(harness: PayhookHarness, event: dict[str, Any], **process: Any) -> str:
    assert harness.deliver(event).status_code == 200
    harness.process(**process)
    [run] = harness.runs(event["id"])
    return run.status
