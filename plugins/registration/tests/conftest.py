"""A payhook app with payhook-registration, two tenants, and a recorder of the plugin's hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from registration_testkit import OTHER, TENANT, Conference, HookRecorder

import payhook_registration

if TYPE_CHECKING:
    from payhook.testing import MakePayhook

pytest_plugins = ["payhook.testing"]


@pytest.fixture
def conference(make_payhook: MakePayhook) -> Conference:
    hooks = HookRecorder()
    harness = make_payhook(
        {"registration": payhook_registration, "recorder": hooks},
        tenants={
            TENANT: {"plugins": ["registration", "recorder"]},
            OTHER: {"plugins": ["registration", "recorder"]},
        },
    )
    return Conference(harness, hooks)
