"""The worker's error tree: what can go wrong, and what the worker does about it.

Every failure the worker reports is one of these classes, so the code that decides
what to do with a failed delivery (reply and ack, or retry later) needs to look at
the class only, never at the text:

* `PermanentError`: retrying cannot help (a bad request, a Job spec Kubernetes refuses).
  The request gets a reply and leaves the queue.
* `TransientError`: the world may be better in a moment (a server down, 429, 5xx).
  The caller retries with backoff, and only then gives up.
* `ConfigError`: the worker itself is misconfigured; it must not start.

The message of each error is a sentence the person who sent the request (or who
deployed the worker) can act on, because it ends up verbatim in replies and logs.
Adapters wrap library exceptions with ``raise SomeError(...) from exc`` so the
original cause stays attached for the logs.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ImageNotAllowed",
    "InvalidRequest",
    "MalformedRequest",
    "MstcError",
    "PermanentError",
    "RequestRejected",
    "TransientError",
]


class MstcError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MstcError):
    """The worker's settings are invalid; it must exit instead of running half-configured.

    `problems` holds one line per bad setting, each naming the environment variable
    to fix, so an operator reading a crash-looping pod's log knows what to change.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems) or ("unknown configuration problem",)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"Invalid configuration; fix these environment variables:\n{lines}")


class PermanentError(MstcError):
    """Retrying would fail the same way: reply with the error and never requeue."""


class TransientError(MstcError):
    """A temporary failure of a server the worker depends on: retry with backoff.

    `retry_after` carries a server's own hint (seconds) when it gave one, such as
    Kubernetes' Retry-After on a 429, so the retry policy can honour it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestRejected(PermanentError):
    """The request itself is wrong; the sender must change it before sending it again.

    `field` names the JSON field at fault (a dotted path such as ``env.FOO`` for
    nested values), or None when the body as a whole is at fault, so clients can
    point at the exact input without parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequest(RequestRejected):
    """A required field (image, jobName, or an input bucket) is missing or empty.

    Kept apart from other rejections because the Java worker answered exactly this
    case with its own text, which Java-era clients may match on.
    """


class MalformedRequest(RequestRejected):
    """The body is not a JSON object at all: too large, not UTF-8, not JSON, or not an object."""


class ImageNotAllowed(RequestRejected):
    """The image is outside the operator's allow-list (MSTC_IMAGE_ALLOW)."""
