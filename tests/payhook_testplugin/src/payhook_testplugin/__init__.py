"""A plugin installed through its entry point; it records each import and call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from payhook import HandlerContext, hookimpl

# Lets a test prove whether this module was imported at all (PAYHOOK_DISABLED_PLUGINS).
_marker = os.environ.get("PAYHOOK_TESTPLUGIN_IMPORT_MARKER")
if _marker:
    Path(_marker).write_text("imported")

CALLS: list[tuple[str, str]] = []


def remember(event: Any, ctx: HandlerContext) -> None:
    CALLS.append((ctx.tenant.slug, event.id))


@hookimpl
def register_handlers(register: Any) -> None:
    register("payment_intent.succeeded", remember)
