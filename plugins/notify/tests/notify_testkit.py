"""Helpers for payhook-notify's tests: the tenant, and the chat service's URL.

They live here, not in conftest.py, so that test modules import them by a name no other
suite uses: every suite can then be collected in one pytest run.
"""

from __future__ import annotations

TENANT = "pycon"
# Slack's incoming-webhook URLs carry their secret in the path.
HOOK_URL = "https://hooks.slack.test/services/T000/B000/not-a-real-secret"
