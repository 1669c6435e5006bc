"""A payhook app with payhook-notify, and a respx router standing in for the chat service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import respx
from notify_testkit import HOOK_URL, TENANT

import payhook_notify

if TYPE_CHECKING:
    from payhook.testing import MakePayhook, PayhookHarness

pytest_plugins = ["payhook.testing"]


@pytest.fixture
def chat() -> Iterator[respx.MockRouter]:
    """Outbound HTTP; a request nobody mocked fails the test."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture
def make_notifier(make_payhook: MakePayhook) -> Callable[..., PayhookHarness]:
    def factory(**settings: Any) -> PayhookHarness:
        config = {"url": HOOK_URL, **settings}
        return make_payhook(
            {"notify": payhook_notify},
            tenants={TENANT: {"plugins": ["notify"], "plugin_config": {"notify": config}}},
        )

    return factory
