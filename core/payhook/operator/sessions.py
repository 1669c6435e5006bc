"""The operator app's open sessions, kept in the payhook database: `SessionStore`.

A session cookie is signed (auth.py) and names a row of `payhook_operator_session`; logout
deletes the row, so the cookie is refused from then on even if someone kept a copy. In the
database rather than in memory, so every process that serves the operator app over the same
store (a host's own workers, a restarted `serve`) knows the same sessions. The row holds a
digest of the session's nonce, never the nonce: reading the table does not give a session.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Column, MetaData, String, Table, delete, insert, select

from payhook.store.engine import Store
from payhook.store.models import UTCDateTime

__all__ = ["SESSION_TABLE", "SessionStore"]

SESSION_TABLE = Table(
    "payhook_operator_session",
    MetaData(),
    Column("digest", String(64), primary_key=True),  # sha256 of the nonce, in hex
    Column("created_at", UTCDateTime(), nullable=False),
    # No index: the table holds the sessions opened in the last SESSION_SECONDS, a handful.
    Column("expires_at", UTCDateTime(), nullable=False),
)


def _digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


class SessionStore:
    """Open, look up and close sessions; every method blocks on the database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open(self, nonce: str, now: datetime, expires_at: datetime) -> None:
        """Record a new session, and forget the ones that expired (so the table stays small)."""
        with self.store.transaction() as conn:
            conn.execute(delete(SESSION_TABLE).where(SESSION_TABLE.c.expires_at <= now))
            conn.execute(
                insert(SESSION_TABLE).values(digest=_digest(nonce), created_at=now, expires_at=expires_at)
            )

    def is_open(self, nonce: str, now: datetime) -> bool:
        query = select(SESSION_TABLE.c.digest).where(
            SESSION_TABLE.c.digest == _digest(nonce), SESSION_TABLE.c.expires_at > now
        )
        with self.store.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def close(self, nonce: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(delete(SESSION_TABLE).where(SESSION_TABLE.c.digest == _digest(nonce)))
