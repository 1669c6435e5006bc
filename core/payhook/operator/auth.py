"""Who may use the operator app: the holder of `[operator] token`.

Scripts send it as `Authorization: Bearer <token>`. People type it once into the login form
and get a session cookie (Secure, HttpOnly, SameSite=Strict) for SESSION_SECONDS. The
cookie holds no secret: it is an expiry time and a random nonce, signed with a key derived
from the token, so changing the token ends every session. The session is also a row in the
database (sessions.py), which logout deletes: a copy of the cookie kept after logout is
refused. A form that changes something (replay, logout) also carries a CSRF token derived
from the session's nonce; bearer requests need none, since a browser never adds that header
itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from payhook.operator.sessions import SessionStore
from payhook.store.models import utcnow

__all__ = ["SESSION_COOKIE", "SESSION_SECONDS", "Auth", "Visitor", "bearer_token"]

SESSION_COOKIE = "payhook_operator"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Visitor:
    """An authenticated request: by bearer token, or by a session with its CSRF token."""

    via: str  # "bearer" or "session"
    csrf: str | None = field(default=None, repr=False)
    session: str | None = field(default=None, repr=False)  # the session's nonce


class Auth:
    def __init__(self, token: str, sessions: SessionStore) -> None:
        self._token = token.encode()
        self.sessions = sessions
        self._key = hmac.new(self._token, b"payhook operator session", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Auth(<token>)"

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def new_session(self, now: float | None = None) -> str:
        """Open a session (its row in the database: this blocks) and return its cookie."""
        started = now if now is not None else time.time()
        expires = int(started) + SESSION_SECONDS
        nonce = secrets.token_urlsafe(16)
        self.sessions.open(nonce, _utc(started), _utc(expires))
        return f"{expires}.{nonce}.{self._sign(f'{expires}.{nonce}')}"

    def end_session(self, visitor: Visitor) -> None:
        """Close `visitor`'s session for good (this blocks); nothing for a bearer."""
        if visitor.session is not None:
            self.sessions.close(visitor.session)

    def session_nonce(self, cookie: str, now: float | None = None) -> str | None:
        """The nonce of a validly signed, unexpired session cookie; None for anything else.

        The cookie alone: whether the session is still open is the database's to say.
        """
        expires, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (expires.isdigit() and nonce and signature):
            return None
        if not hmac.compare_digest(signature, self._sign(f"{expires}.{nonce}")):
            return None
        if int(expires) < (now if now is not None else time.time()):
            return None
        return nonce

    def csrf_for(self, nonce: str) -> str:
        return self._sign(f"csrf.{nonce}")

    async def identify(self, request: Request) -> Visitor | None:
        """Who sent `request`, or None when it carries neither the token nor an open session.

        Raises StoreUnavailable when a session cookie cannot be checked.
        """
        offered = bearer_token(request)
        if offered is not None and self.token_matches(offered):
            return Visitor("bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        nonce = self.session_nonce(cookie) if cookie else None
        if nonce is None or not await run_in_threadpool(self.sessions.is_open, nonce, utcnow()):
            return None
        return Visitor("session", self.csrf_for(nonce), nonce)

    def csrf_ok(self, visitor: Visitor, submitted: str | None) -> bool:
        if visitor.via == "bearer":
            return True
        return (
            visitor.csrf is not None
            and submitted is not None
            and hmac.compare_digest(visitor.csrf, submitted)
        )

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, right or wrong; None without one."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
