"""Reviewer sessions: a signed cookie that names a key, and CSRF tokens bound to it.

A reviewer signs in once with an API key; the server checks the secret and answers a
cookie holding only the key's *id*, a random session id and an expiry, signed with
HMAC-SHA256 under a secret kept in the store (`store.secret("ui-session")`), so every
replica over the same database accepts it and a restart does not sign everyone out. The
key's secret never leaves the sign-in request. Each request looks the key up again, so a
revoked key ends its sessions within a second.

Forms carry a CSRF token: an HMAC of the session id, so no server state is needed and a
token from one session is useless in another. The sign-in form, before any session
exists, is bound the same way to a short-lived pre-session cookie, which stops a hostile
page from signing a reviewer in under the attacker's key. The cookie is also
`SameSite=Strict` and `HttpOnly`; the CSRF check is the defence that does not depend on
the browser.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COOKIE", "LIFETIME", "PRE_COOKIE", "Session", "Sessions"]

#: The session cookie's name.
COOKIE = "charter_ui"
#: The sign-in form's pre-session cookie.
PRE_COOKIE = "charter_ui_signin"
#: How long a session lasts, in seconds: one working day.
LIFETIME = 8 * 3600
_VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in reviewer: the session's id, the key it was opened with, its expiry."""

    id: str
    key_id: str
    expires: int


class Sessions:
    """Issue, read and end session cookies; make and check CSRF tokens.

    Args:
        secret: the store's `ui-session` secret (32 random bytes).
        lifetime: how long a session lasts, in seconds.
        clock: wall-clock seconds; tests pass their own.
    """

    def __init__(
        self, secret: bytes, *, lifetime: int = LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        # One secret, separate keys per use: a CSRF token can never pass as a cookie.
        self._cookie_key = hmac.digest(secret, b"charter-ui cookie", "sha256")
        self._csrf_key = hmac.digest(secret, b"charter-ui csrf", "sha256")
        self._lifetime = lifetime
        self._clock = clock
        self._ended: dict[str, int] = {}
        self._lock = threading.Lock()

    def _sign(self, body: bytes) -> str:
        return _b64(hmac.digest(self._cookie_key, body, "sha256"))

    def issue(self, key_id: str) -> tuple[str, Session]:
        """A new session for a key: the cookie's value and the session it stands for."""
        session = Session(secrets.token_urlsafe(18), key_id, int(self._clock()) + self._lifetime)
        body = json.dumps(
            {"sid": session.id, "key": key_id, "exp": session.expires}, separators=(",", ":")
        ).encode()
        return f"{_VERSION}.{_b64(body)}.{self._sign(body)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None: missing, forged, expired or ended."""
        if not cookie or len(cookie) > 1024:
            return None
        version, _, rest = cookie.partition(".")
        encoded, _, signature = rest.partition(".")
        if version != _VERSION or not encoded or not signature:
            return None
        try:
            body = _unb64(encoded)
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        try:
            data = json.loads(body)
            session = Session(str(data["sid"]), str(data["key"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = int(self._clock())
        if session.expires <= now:
            return None
        with self._lock:
            if session.id in self._ended:
                return None
        return session

    def end(self, session: Session) -> None:
        """Sign a session out: its cookie stops working here even if a copy survives.

        Ended ids are kept until they would have expired anyway. (One process: a cluster
        would keep them in the store; the key's revocation ends sessions everywhere.)
        """
        now = int(self._clock())
        with self._lock:
            self._ended = {k: v for k, v in self._ended.items() if v > now}
            self._ended[session.id] = session.expires

    def csrf_token(self, bound_to: str) -> str:
        """The CSRF token for forms of one session (or one pre-session nonce)."""
        return _b64(hmac.digest(self._csrf_key, bound_to.encode(), "sha256"))

    def check_csrf(self, bound_to: str, token: str | None) -> bool:
        """Whether `token` is the CSRF token of `bound_to`."""
        return bool(token) and hmac.compare_digest(self.csrf_token(bound_to), str(token))

    @staticmethod
    def nonce() -> str:
        """A fresh random value for the sign-in form's pre-session cookie."""
        return secrets.token_urlsafe(18)
