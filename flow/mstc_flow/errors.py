"""The flow service's error tree: what can go wrong, and what the service does about it.

Callers decide on the class, never on the text:

* `ConfigError`: the service's own settings are wrong; it must not start.
* `PermanentError`: retrying cannot help. `CatalogError` (a catalog refused whole, with the
  line and the reason) and `BadQuery` (an API query the store cannot answer) are its kinds.
* `TransientError`: a server is down or busy; retry with backoff, then park the work where
  an operator sees it (a trigger is never dropped).
* `NotFound`: the job, entry or firing asked for does not exist.

Adapters translate their library's exceptions into these (`raise ... from exc`), so only
the adapter knows the library. Every message is a sentence the reader can act on.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BadQuery",
    "CatalogError",
    "ConfigError",
    "FlowError",
    "NotFound",
    "PermanentError",
    "PipelineRefused",
    "TooLarge",
    "TransientError",
]


class FlowError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FlowError):
    """Invalid settings; `problems` holds one line per bad environment variable."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems) or ("unknown configuration problem",)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"Invalid configuration; fix these environment variables:\n{lines}")


class PermanentError(FlowError):
    """Retrying would fail the same way."""


class TransientError(FlowError):
    """A server was unreachable or busy; the same call may succeed later."""


class NotFound(PermanentError):
    """The thing asked for does not exist (an API 404)."""


class BadQuery(PermanentError):
    """A query the store cannot answer as asked (an API 400), naming the parameter."""


class CatalogError(PermanentError):
    """A catalog refused whole: `source` and `line` say where, the message says why.

    `line` is the 1-based line of the file (a CSV row's line, a YAML entry's first line);
    0 when the problem is the file as a whole (unreadable, empty, not a list).
    """

    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {reason}")


class PipelineRefused(PermanentError):
    """A pipeline document refused whole (an API 422): `task` and `field` say where (None:
    the document as a whole), `line` the line in it (0: unknown)."""

    def __init__(self, message: str, task: str | None, field: str | None, line: int) -> None:
        super().__init__(message)
        self.task, self.field, self.line = task, field, line


class TooLarge(PermanentError):
    """A request body over the size the API takes (an API 413)."""
