"""Kubernetes API failures in the worker's error tree, and the retry policy for them.

Owns the one decision every Kubernetes call needs: is this failure worth another try?
429, 5xx, timeouts and connection problems are `KubeUnavailable` (a `TransientError`,
retried with bounded, jittered backoff that honours the server's Retry-After); any other
4xx is `KubeRejected` (a `PermanentError`) carrying the API server's own message, which
can go straight into a reply. Kept out of `kube` so the rule is unit-tested alone; the
library exception is unpacked in `kube`, the only module that imports the kubernetes
library, and all these names are re-exported from there.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Mapping
from typing import Any

import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from mstc_worker.errors import PermanentError, TransientError

__all__ = [
    "CONNECTION_ERRORS",
    "RETRY_AFTER_MAX",
    "KubeRejected",
    "KubeUnavailable",
    "api_error",
    "retrying",
]

log = logging.getLogger(__name__)

# What the HTTP stack raises when the server cannot be reached or the connection breaks.
CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
ATTEMPTS = 5
RETRY_AFTER_MAX = 30.0  # a server's Retry-After hint, capped so a retry loop stays bounded
# 0.2 s doubling, capped at 5 s, plus up to 0.2 s of jitter so that workers do not retry
# in lockstep after a shared outage.
_BACKOFF = wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2)


class KubeUnavailable(TransientError):
    """The API server could not be reached or asked to come back later (429, 5xx)."""


class KubeRejected(PermanentError):
    """The API server refused the call (a 4xx other than 408/429); its message says why.

    `status` is the HTTP status and `reason` the API server's Status reason
    (``AlreadyExists``, ``Invalid``, ``NotFound``, ``Conflict``, ...).
    """

    def __init__(self, message: str, *, status: int, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def api_error(
    what: str,
    *,
    status: int | None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    http_reason: str | None = None,
) -> KubeUnavailable | KubeRejected:
    """The worker's error for an API server answer `status` (with its Status `body`)."""
    code = int(status or 0)
    try:
        parsed = json.loads(body) if body else {}
    except (TypeError, ValueError):
        parsed = {}
    server = parsed if isinstance(parsed, dict) else {}
    message = server.get("message") or http_reason or "no message"
    # Status 0 is the client's own failure before any answer (a TLS handshake cut short).
    if code in (0, 408, 429) or code >= 500:
        return KubeUnavailable(
            f"{what}: Kubernetes API unavailable (HTTP {code}): {message}",
            retry_after=_retry_after(headers),
        )
    return KubeRejected(f"{what}: {message}", status=code, reason=server.get("reason"))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date instead of seconds: our own backoff will do


def _wait(state: RetryCallState) -> float:
    """Our backoff, or the server's own hint (Retry-After) when it gave one."""
    exc = state.outcome.exception() if state.outcome else None
    hint = exc.retry_after if isinstance(exc, TransientError) else None
    if hint is not None:
        return min(hint, RETRY_AFTER_MAX)
    return float(_BACKOFF(state))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("kubernetes: attempt %d failed, retrying: %s", state.attempt_number, exc)


def retrying(attempts: int = ATTEMPTS) -> Retrying:
    """The retry policy of every Kubernetes call: KubeUnavailable only, `attempts` at most."""
    return Retrying(
        retry=retry_if_exception_type(KubeUnavailable),
        stop=stop_after_attempt(attempts),
        wait=_wait,
        before_sleep=_log_retry,
        reraise=True,
    )
