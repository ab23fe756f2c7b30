"""Dashboard sessions: a signed cookie saying who logged in, and the CSRF token of its forms.

Owns the cookie's format and its checks, and nothing of HTTP. A session is
`<payload>.<signature>`: the payload (base64url JSON) holds the access (read or admin), the
expiry and a random nonce; the signature is HMAC-SHA256 over it. The key is derived from the
two tokens (HMAC of the admin token over a label and the read token), so every replica of the
flow signs alike without a new setting, and changing either token logs every session out. The
token itself is never stored in the cookie, and never in a URL. A form's CSRF token is an HMAC
of the session's nonce under the same key: only a page rendered for that session knows it, and
a cross-site form post (which SameSite=Strict already keeps the cookie from) still lacks it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from mstc_flow.settings import FlowSettings

__all__ = ["COOKIE", "LIFETIME_SECONDS", "Session", "Sessions"]

COOKIE = "mstc_flow_session"
LIFETIME_SECONDS = 12 * 3600
_LABEL = b"mstc-flow dashboard sessions v1\x00"
_ACCESS = ("read", "admin")


@dataclass(frozen=True)
class Session:
    """A valid session: its access ("read" or "admin"), expiry (epoch s) and nonce."""

    access: str
    expires: int
    nonce: str

    @property
    def admin(self) -> bool:
        return self.access == "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Makes and checks session cookies and CSRF tokens with the key the tokens derive."""

    def __init__(self, settings: FlowSettings) -> None:
        admin = settings.admin_token.get_secret_value().encode()
        read = settings.read_token.get_secret_value().encode() if settings.read_token else b""
        self._key = hmac.new(admin, _LABEL + read, hashlib.sha256).digest()

    def issue(self, access: str, now: float | None = None) -> str:
        """A new session cookie's value for `access` ("read" or "admin")."""
        if access not in _ACCESS:
            raise ValueError(f"access must be one of {_ACCESS}, not {access!r}")
        expires = int(now if now is not None else time.time()) + LIFETIME_SECONDS
        body = {"a": access, "e": expires, "n": secrets.token_urlsafe(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def check(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session `cookie` holds, or None when it is missing, forged, altered or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(access=body["a"], expires=int(body["e"]), nonce=str(body["n"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        moment = now if now is not None else time.time()
        if session.access not in _ACCESS or session.expires <= moment:
            return None
        return session

    def csrf(self, session: Session) -> str:
        """The CSRF token the session's forms carry."""
        return self._sign("csrf:" + session.nonce)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())
