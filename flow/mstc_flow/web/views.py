"""What the dashboard's templates show, computed: times, durations, ages, origins, filters.

Pure functions (no web library, no store), registered as Jinja filters by `pages`; also the
jobs list's filter form read into the history's `JobQuery`, and the test whether a job
belongs on a filtered list (a job the live feed announces is added to the open list only then).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mstc_flow.errors import BadQuery
from mstc_flow.store.history_records import STATES, JobQuery

__all__ = [
    "FILTERS", "STATES", "age", "clock", "duration", "isoclock", "job_query", "matches", "origin",
]  # fmt: skip

FILTERS = ("state", "name", "label", "image", "since", "until")
PAGE_SIZE = 50


def clock(moment: datetime | None) -> str:
    """`2026-11-30 16:05:07` in UTC; an em dash for no time."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(job: Any) -> str:
    """How long the job ran: `1m 05s`, `450 ms`; an em dash while unknown."""
    millis = job.duration_ms
    if millis is None and job.finished_at is not None and job.running_at is not None:
        millis = int((job.finished_at - job.running_at).total_seconds() * 1000)
    if millis is None:
        return "—"
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis // 1000
    if seconds < 60:
        return f"{millis / 1000:.1f} s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def age(moment: datetime | None, now: datetime) -> str:
    """How long ago: `4 s`, `3 min`, `2 h`."""
    if moment is None:
        return "—"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def origin(correlation_id: str | None) -> str:
    """Who sent the request: `trigger <id>` (the flow), `pipeline <id>`, or an em dash."""
    if correlation_id and correlation_id.startswith("flow:"):
        return "trigger " + correlation_id[5:]
    if correlation_id and correlation_id.startswith("pipe:"):
        return "pipeline " + correlation_id[5:]
    return "—"


def isoclock(text: object) -> str:
    """An ISO 8601 time as the API answers it (`...Z` or an offset), shown as `clock` does."""
    if not isinstance(text, str) or not text:
        return "—"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text[:40]
    return clock(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _time(name: str, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadQuery(f"{name}: not a date and time: {text[:40]!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def job_query(form: Mapping[str, str], cursor: str | None = None) -> JobQuery:
    """The filter form's fields (empty ones ignored; times in UTC) as a checked `JobQuery`."""
    state = form.get("state") or None
    if state is not None and state not in STATES:
        raise BadQuery(f"state: one of {', '.join(STATES)}, not {state[:40]!r}")
    query = JobQuery(
        state=state, name=form.get("name") or None, label=form.get("label") or None,
        image=form.get("image") or None, since=_time("since", form.get("since")),
        until=_time("until", form.get("until")), limit=PAGE_SIZE, cursor=cursor or None,
    )  # fmt: skip
    query.check()
    return query


def matches(job: Any, query: JobQuery) -> bool:
    """Whether `job` belongs on the list `query` filters (its first page)."""
    if query.state is not None and job.state != query.state:
        return False
    if query.name is not None and query.name not in (job.requested_name, job.job_name):
        return False
    if query.image is not None and job.image != query.image:
        return False
    if query.label is not None:
        key, value = query.label_pair()
        if job.labels.get(key) != value:
            return False
    seen = job.accepted_at or job.updated_at
    if query.since is not None and (seen is None or seen < query.since):
        return False
    return query.until is None or (seen is not None and seen < query.until)
