"""A plugin installed through its entry point, for the core's process-level tests.

Its handler writes one `testplugin_effect` row per applied call, which is what the
exactly-once tests count. Environment switches let a test make it slow or make it block
mid-transaction (to kill the worker there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from payhook import HandlerContext, hookimpl
from sqlmodel import Field, SQLModel

# Lets a test prove whether this module was imported at all (PAYHOOK_DISABLED_PLUGINS).
_marker = os.environ.get("PAYHOOK_TESTPLUGIN_IMPORT_MARKER")
if _marker:
    Path(_marker).write_text("imported")

CALLS: list[tuple[str, str]] = []


class TestpluginEffect(SQLModel, table=True):
    __tablename__ = "testplugin_effect"

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=64)
    stripe_event_id: str = Field(max_length=255, index=True)
    attempt: int
    pid: int


def remember(event: Any, ctx: HandlerContext) -> None:
    CALLS.append((ctx.tenant.slug, event.id))
    ctx.session.add(
        TestpluginEffect(
            tenant=ctx.tenant.slug, stripe_event_id=event.id, attempt=ctx.attempt, pid=os.getpid()
        )
    )
    ctx.session.flush()  # the row is written, uncommitted, before any blocking below
    delay = float(os.environ.get("PAYHOOK_TESTPLUGIN_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    block_dir = os.environ.get("PAYHOOK_TESTPLUGIN_BLOCK_DIR")
    metadata = event.data.object.metadata.to_dict()
    if block_dir and metadata.get("block") == "yes" and ctx.attempt == 1:
        # Tell the test we are mid-transaction, then wait to be killed (bounded).
        Path(block_dir, f"{event.id}.blocked").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not Path(block_dir, "release").exists():
            time.sleep(0.05)


@hookimpl
def register_handlers(register: Any) -> None:
    register("payment_intent.succeeded", remember)
