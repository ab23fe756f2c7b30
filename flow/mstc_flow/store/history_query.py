"""The statements behind `History.list_jobs`: filters, keyset order and the cursor's bound.

Owns turning a `JobQuery` into SQL that an index answers on both backends at 100,000 jobs
and beyond. Every listing is newest first by (`seen_at`, `request_id`) and walks an index
that ends in those two columns, stopping at the page's end:

* with a label, the walk is on the label's own index (`history_labels` repeats `seen_at`),
  joined to each job by its key, so a common label and a rare one are both cheap;
* a name matches the requested or the made name: two walks, one per name index, merged by
  the caller (an OR of two columns would make the database sort every match first); a
  name is the narrower filter, so with a name a label is tested job by job instead;
* `flagged` keeps the jobs with an open flag (`flags` is small: a key lookup per job);
* a correlation prefix is a LIKE on PostgreSQL (its index uses text_pattern_ops), and an
  index range plus an exact substring test on SQLite, whose LIKE ignores case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    exists,
    func,
    literal,
    select,
    tuple_,
)

from mstc_flow.store.flags import JOB_FLAG_KINDS, FlagRow
from mstc_flow.store.history_records import JobQuery, utc
from mstc_flow.store.history_tables import HistoryJob, HistoryLabel, UtcDateTime

__all__ = ["NAME_COLUMNS", "page_statement"]

NAME_COLUMNS = (HistoryJob.requested_name, HistoryJob.job_name)


def page_statement(
    query: JobQuery,
    *,
    dialect: str,
    name_column: Any = None,
    after: tuple[datetime, str] | None = None,
) -> Select[tuple[HistoryJob]]:
    """At most `query.limit + 1` jobs after the cursor's row (one more tells a next page)."""
    statement = select(HistoryJob)
    seen, request_id = HistoryJob.seen_at, HistoryJob.request_id
    if query.name is not None and name_column is not None:
        statement = statement.where(name_column == query.name)
    if query.label is not None:
        key, value = query.label_pair()
        labelled = and_(
            HistoryLabel.request_id == HistoryJob.request_id,
            HistoryLabel.key == key,
            HistoryLabel.value == value,
        )
        if name_column is not None:  # the name's walk is the shorter: test the label per job
            statement = statement.where(exists().where(labelled))
        else:
            seen, request_id = HistoryLabel.seen_at, HistoryLabel.request_id
            statement = statement.join(HistoryLabel, labelled)
    statement = statement.where(*_filters(query, dialect, seen))
    if after is not None:
        bound = tuple_(literal(after[0], UtcDateTime()), literal(after[1], String()))
        statement = statement.where(tuple_(seen, request_id) < bound)
    return statement.order_by(seen.desc(), request_id.desc()).limit(query.limit + 1)


def _filters(query: JobQuery, dialect: str, seen: Any) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if query.state is not None:
        found.append(HistoryJob.state == query.state)
    if query.image is not None:
        found.append(HistoryJob.image == query.image)
    if query.since is not None:
        found.append(seen >= utc(query.since))
    if query.until is not None:
        found.append(seen < utc(query.until))
    if query.correlation_prefix is not None:
        found.append(_prefix(query.correlation_prefix, dialect))
    if query.flagged:
        found.append(
            exists().where(
                FlagRow.subject == HistoryJob.request_id,
                FlagRow.cleared_at.is_(None),
                FlagRow.kind.in_(JOB_FLAG_KINDS),
            )
        )
    return found


def _prefix(prefix: str, dialect: str) -> ColumnElement[bool]:
    column = HistoryJob.correlation_id
    if dialect == "postgresql":
        return column.startswith(prefix, autoescape=True)
    return and_(column >= prefix, func.substr(column, 1, len(prefix)) == prefix)
