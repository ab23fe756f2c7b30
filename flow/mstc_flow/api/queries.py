"""`JobQuery`: what a caller may ask of the history, as the shared plan names it.

The store's History answers it (H1's `mstc_flow.store.history.JobQuery` has exactly these
fields); the API builds one from a request's query parameters. Kept here so that the API
does not depend on the store's module while both are written; at the merge one of the two
definitions goes and the other is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["JobQuery"]


@dataclass(frozen=True)
class JobQuery:
    """Filters and a page: every field None means "any"; `label` is "key=value"."""

    state: str | None = None
    name: str | None = None
    label: str | None = None
    image: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    correlation_prefix: str | None = None
    limit: int = 50
    cursor: str | None = None
