"""What the history hands out and takes in: queries, pages, job and replica records.

Plain frozen dataclasses with no SQLAlchemy in them, so the API and the service use them
without knowing the store. Owns the rules of a query (limit bounds, the label's `k=v` form,
known states) and the cursor: an opaque token naming the last row of a page by its sort key,
so the next page starts right after it whatever was recorded in between.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from mstc_flow.errors import BadQuery

__all__ = [
    "FINAL_STATES",
    "STATES",
    "JobPage",
    "JobQuery",
    "JobRecord",
    "ReplicaRecord",
    "decode_cursor",
    "encode_cursor",
]

PROGRESS_STATES = ("accepted", "running")
FINAL_STATES = ("succeeded", "failed", "timeout", "error", "cancelled", "rejected")
STATES = PROGRESS_STATES + FINAL_STATES
MAX_LIMIT = 500


@dataclass(frozen=True)
class JobQuery:
    """Filters of `History.list_jobs`; every one given must hold (AND)."""

    state: str | None = None
    name: str | None = None  # the requested or the made name, exactly
    label: str | None = None  # "key=value"
    image: str | None = None
    since: datetime | None = None  # on when the job was first seen (inclusive)
    until: datetime | None = None  # (exclusive)
    correlation_prefix: str | None = None
    flagged: bool = False  # only Jobs with an open stalled flag (pending, overdue)
    limit: int = 50
    cursor: str | None = None

    def check(self) -> None:
        """Raise BadQuery naming the first parameter that cannot be answered."""
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be from 1 to {MAX_LIMIT}, not {self.limit}")
        if self.state is not None and self.state not in STATES:
            raise BadQuery(f"state must be one of {', '.join(STATES)}, not {self.state!r}")
        if self.label is not None:
            self.label_pair()
        if self.since and self.until and utc(self.since) >= utc(self.until):
            raise BadQuery("since must be before until")

    def label_pair(self) -> tuple[str, str]:
        key, sep, value = (self.label or "").partition("=")
        if not sep or not key:
            raise BadQuery(f"label must be key=value, not {self.label!r}")
        return key, value


@dataclass(frozen=True)
class JobRecord:
    """One request as the history knows it (times in UTC)."""

    request_id: str
    requested_name: str | None
    job_name: str | None
    namespace: str | None
    image: str | None
    state: str
    request: dict[str, Any] | None
    labels: dict[str, str]
    correlation_id: str | None
    replica: str | None
    accepted_at: datetime | None
    running_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    reason: str | None
    message: str | None
    error: str | None
    log_bucket: str | None
    log_object: str | None
    output_bucket: str | None
    pods_succeeded: int | None
    pods_failed: int | None
    duration_ms: int | None
    updated_at: datetime
    # When the first event of it was published: the listing's sort key. Not in to_json, and
    # optional so that code outside the store can make a record from the fields above alone.
    seen_at: datetime | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, ISO 8601 times with Z, as the worker's events write them."""
        out: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "seen_at":
                continue
            value = getattr(self, item.name)
            out[_camel(item.name)] = iso(value) if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class JobPage:
    items: list[JobRecord]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True)
class ReplicaRecord:
    """A worker replica's last heartbeat; `stopping` once it said it stops."""

    replica: str
    version: str | None
    in_flight: int | None
    capacity: int | None
    started_at: datetime | None
    last_seen: datetime
    stopping: bool
    interval_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            _camel(item.name): iso(v) if isinstance(v := getattr(self, item.name), datetime) else v
            for item in fields(self)
        }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def utc(moment: datetime) -> datetime:
    """An aware UTC time; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(seen_at: datetime, request_id: str) -> str:
    raw = json.dumps([utc(seen_at).isoformat(), request_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The sort key a cursor names; BadQuery for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, request_id = json.loads(raw)
        if not isinstance(moment, str) or not isinstance(request_id, str):
            raise TypeError(cursor)
        return utc(datetime.fromisoformat(moment)), request_id
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise BadQuery("cursor is not one this service handed out; start again without it") from exc
