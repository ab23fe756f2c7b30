"""The history's tables: one row per request, one per event, one per label, one per replica.

Owns the schema of the history (declared on `Base`; created by revision `0002_history`) and
the column types that make hostile text storable on both backends: text from events is cut
to a bound, NUL and lone surrogates replaced (PostgreSQL refuses both), JSON kept as text so
any decoded body can be stored and read back. Times are stored in UTC and read back aware.

Every listing is newest first by (`seen_at`, `request_id`), so each filter of `list_jobs`
has an index that ends in those two columns: the first page and every keyset page after it
are an index range scan, not a sort of the whole table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import Mapped, mapped_column

from mstc_flow.store.db import Base

__all__ = ["HistoryEvent", "HistoryJob", "HistoryLabel", "HistoryReplica", "clean_text"]

KEY_LENGTH = 200  # request ids are 64 hex digits; event ids add ":<state>"
TEXT_LENGTH = 1000  # names, images, correlation ids, label keys and values


def clean_text(value: object, limit: int = TEXT_LENGTH) -> str | None:
    """A string storable in an indexed column, or None when `value` is not a string."""
    if not isinstance(value, str):
        return None
    text = value[:limit].replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return text.encode("utf-8", "replace").decode("utf-8")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC (SQLite keeps no offset) and always read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        moment = aware.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JsonText(TypeDecorator[Any]):
    """Any JSON value, stored as its text with lone surrogates replaced (storable anywhere)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "replace").decode("utf-8")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def _text() -> Mapped[str | None]:
    return mapped_column(String(TEXT_LENGTH), nullable=True)


class HistoryJob(Base):
    """What is known of one request, merged from its events in whatever order they came."""

    __tablename__ = "history_jobs"

    request_id: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    requested_name: Mapped[str | None] = _text()
    job_name: Mapped[str | None] = _text()
    namespace: Mapped[str | None] = _text()
    image: Mapped[str | None] = _text()
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[datetime] = mapped_column(UtcDateTime())  # when `state` was reached
    request: Mapped[dict[str, Any] | None] = mapped_column(JsonText(), nullable=True)
    labels: Mapped[dict[str, str]] = mapped_column(JsonText())
    correlation_id: Mapped[str | None] = _text()
    replica: Mapped[str | None] = _text()
    replica_accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime())  # the earliest event's time
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    running_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_bucket: Mapped[str | None] = _text()
    log_object: Mapped[str | None] = _text()
    output_bucket: Mapped[str | None] = _text()
    pods_succeeded: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pods_failed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_history_jobs_seen", "seen_at", "request_id"),
        Index("ix_history_jobs_state_seen", "state", "seen_at", "request_id"),
        Index("ix_history_jobs_requested_seen", "requested_name", "seen_at", "request_id"),
        Index("ix_history_jobs_made_seen", "job_name", "seen_at", "request_id"),
        Index("ix_history_jobs_image_seen", "image", "seen_at", "request_id"),
        # text_pattern_ops: PostgreSQL answers a prefix LIKE from it whatever the collation.
        Index(
            "ix_history_jobs_correlation",
            "correlation_id",
            postgresql_ops={"correlation_id": "text_pattern_ops"},
        ),
        Index("ix_history_jobs_finished", "finished_at"),
    )


class HistoryLabel(Base):
    """One label of a request, so a label filter is an index lookup, not a JSON scan.

    It repeats the job's `seen_at`, so a label's listing walks its own index newest first
    and stops at the page's end, however many or few jobs carry the label.
    """

    __tablename__ = "history_labels"

    request_id: Mapped[str] = mapped_column(
        String(KEY_LENGTH),
        ForeignKey("history_jobs.request_id", ondelete="CASCADE"),
        primary_key=True,
    )
    key: Mapped[str] = mapped_column(String(TEXT_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_history_labels_pair_seen", "key", "value", "seen_at", "request_id"),
    )


class HistoryEvent(Base):
    """One event as received; its id makes recording it twice a no-op."""

    __tablename__ = "history_events"

    event_id: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(
        String(KEY_LENGTH), ForeignKey("history_jobs.request_id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    body: Mapped[dict[str, Any]] = mapped_column(JsonText())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_history_events_request", "request_id", "at"),)


class HistoryReplica(Base):
    """The last heartbeat of one worker replica."""

    __tablename__ = "history_replicas"

    replica: Mapped[str] = mapped_column(String(TEXT_LENGTH), primary_key=True)
    version: Mapped[str | None] = _text()
    in_flight: Mapped[int | None] = mapped_column(Integer, nullable=True)
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    stopping: Mapped[bool] = mapped_column(Boolean, default=False)
    interval_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
