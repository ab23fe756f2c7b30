"""Bearer tokens: who may read the API and who may change things.

Two tokens from the settings: the read token (optional) may call every GET; the admin token
may call everything, including the POSTs that retry, cancel and fire. A request without a
token, or with one that is neither, gets 401 and `WWW-Authenticate: Bearer`; the read token on
a write gets 403. Tokens are compared in constant time (`hmac.compare_digest`), each against
both secrets, so the time taken says nothing about how much of a token was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import IntEnum
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mstc_flow.settings import FlowSettings

__all__ = ["Access", "AuthFailed", "Forbidden", "Tokens"]


class Access(IntEnum):
    """What a token allows, ordered: ADMIN includes READ."""

    NONE = 0
    READ = 1
    ADMIN = 2


class AuthFailed(Exception):
    """No token, or a token that is neither the read nor the admin one (401)."""


class Forbidden(Exception):
    """A valid token that may not do this (403)."""


# auto_error=False: a missing token is our 401 with our JSON body, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="The read token or the admin token.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class Tokens:
    """The two secrets, as bytes, and the dependencies that check a request against them."""

    def __init__(self, settings: FlowSettings) -> None:
        self._admin = settings.admin_token.get_secret_value().encode()
        read = settings.read_token
        self._read = read.get_secret_value().encode() if read is not None else None

    def access(self, token: str | None) -> Access:
        """What `token` allows; both comparisons always run."""
        if not token:
            return Access.NONE
        given = token.encode()
        is_admin = hmac.compare_digest(given, self._admin)
        is_read = self._read is not None and hmac.compare_digest(given, self._read)
        if is_admin:
            return Access.ADMIN
        return Access.READ if is_read else Access.NONE

    def reader(self) -> Callable[[HTTPAuthorizationCredentials | None], None]:
        """A dependency: the request must carry the read or the admin token."""

        def require_read(credentials: Credentials) -> None:
            if self._grant(credentials) < Access.READ:
                raise AuthFailed("A bearer token is required: the read or the admin token.")

        return require_read

    def admin(self) -> Callable[[HTTPAuthorizationCredentials | None], None]:
        """A dependency: the request must carry the admin token."""

        def require_admin(credentials: Credentials) -> None:
            granted = self._grant(credentials)
            if granted is Access.NONE:
                raise AuthFailed("A bearer token is required: this call needs the admin token.")
            if granted is not Access.ADMIN:
                raise Forbidden("The read token may not change anything: use the admin token.")

        return require_admin

    def _grant(self, credentials: HTTPAuthorizationCredentials | None) -> Access:
        return self.access(None if credentials is None else credentials.credentials)
