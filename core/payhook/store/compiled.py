"""The core's hot statements (the ingest write, the run transitions) on the raw DBAPI cursor.

They skip SQLAlchemy's per-call execution machinery, which costs several times the driver's
own work here. The implementation is payhook.sql's, shared with handlers' `ctx.execute`.
"""

from __future__ import annotations

from payhook.sql import Compiled, insert_keys

__all__ = ["Compiled", "insert_keys"]
