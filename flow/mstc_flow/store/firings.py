"""Firings: one row each time a catalog entry fired, from its message to its Job's final state.

The row is the flow's promise that a trigger is never lost and never doubled:

* `add` is idempotent by (source_key, entry): a message delivered twice (the inbox redelivers
  what was not acked before a crash) finds its firings already there and fires nothing again.
* `claim` is a conditional UPDATE (`state = pending` and no live claim), so of several
  replicas on one PostgreSQL exactly one wins a firing and submits it; a claim older than the
  stale time (its replica died between claiming and submitting) may be taken over.
* states: `pending` (to submit) -> `submitted` (the broker confirmed the request) ->
  `finished` (its final event came, correlationId `flow:<id>`); or `parked` (could not be
  rendered or submitted; an operator sees it), or `skipped` (concurrency `skip`). A request
  purged from the work queue before a worker took it (`mstc queue purge`) finishes its
  firing with job state `purged`: no Job was made, and its slot is free again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mstc_flow.store.db import Base, Database

__all__ = ["CORRELATION_PREFIX", "PURGED", "Firing", "FiringState", "Firings", "new_firing_id"]

CORRELATION_PREFIX = "flow:"
PURGED = "purged"  # the job state of a firing whose request was purged from the work queue
PENDING, SUBMITTED, FINISHED, PARKED, SKIPPED = (
    "pending", "submitted", "finished", "parked", "skipped",
)  # fmt: skip
FiringState = str


def new_firing_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class FiringRow(Base):
    __tablename__ = "firings"
    __table_args__ = (UniqueConstraint("source_key", "entry", name="uq_firings_source_entry"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    entry: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(Text)
    source_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    request: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    job_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(253), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Firing:
    """One firing as stored; `request` is the rendered worker request (None if it never was)."""

    id: str
    entry: str
    kind: str
    topic: str
    source_key: str
    payload: bytes
    request: dict[str, Any] | None
    state: str
    attempts: int
    last_error: str | None
    retry_of: str | None
    request_id: str | None
    job_name: str | None
    job_state: str | None
    created_at: datetime

    @property
    def correlation_id(self) -> str:
        return f"{CORRELATION_PREFIX}{self.id}"

    def to_json(self) -> dict[str, Any]:
        """camelCase, as the API shows it."""
        return {
            "firingId": self.id, "entry": self.entry, "kind": self.kind, "topic": self.topic,
            "state": self.state, "attempts": self.attempts, "lastError": self.last_error,
            "retryOf": self.retry_of, "requestId": self.request_id, "jobName": self.job_name,
            "jobState": self.job_state, "createdAt": self.created_at.isoformat(),
        }  # fmt: skip


def _firing(row: FiringRow) -> Firing:
    request = json.loads(row.request) if row.request is not None else None
    return Firing(
        row.id, row.entry, row.kind, row.topic, row.source_key, row.payload, request,
        row.state, row.attempts, row.last_error, row.retry_of, row.request_id, row.job_name,
        row.job_state, row.created_at,
    )  # fmt: skip


def canonical_json(request: Mapping[str, Any]) -> str:
    """The one text of a request: what is stored, and (parsed back) what is sent, every time."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Firings:
    """The firings table's queries; every method is one short transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def add(
        self, *, firing_id: str, entry: str, kind: str, topic: str, source_key: str,
        payload: bytes, request: Mapping[str, Any] | None, state: str = PENDING,
        last_error: str | None = None, retry_of: str | None = None,
    ) -> Firing | None:  # fmt: skip
        """Record a firing; None when (source_key, entry) fired already (a redelivery)."""
        now = _now()
        row = FiringRow(
            id=firing_id, entry=entry, kind=kind, topic=topic, source_key=source_key,
            payload=payload, request=None if request is None else canonical_json(request),
            state=state, attempts=0, last_error=last_error, retry_of=retry_of,
            created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            with self._db.session() as session:
                session.add(row)
        except IntegrityError:
            return None
        return _firing(row)

    def get(self, firing_id: str) -> Firing | None:
        with self._db.session() as session:
            row = session.get(FiringRow, firing_id)
            return None if row is None else _firing(row)

    def by_request_id(self, request_id: str) -> Firing | None:
        with self._db.session() as session:
            query = select(FiringRow).where(FiringRow.request_id == request_id)
            row = session.scalars(query.order_by(FiringRow.created_at.desc()).limit(1)).first()
            return None if row is None else _firing(row)

    def latest(self, entry: str) -> Firing | None:
        """The entry's newest firing (the catalog page's "last fired")."""
        with self._db.session() as session:
            query = select(FiringRow).where(FiringRow.entry == entry)
            row = session.scalars(query.order_by(FiringRow.created_at.desc()).limit(1)).first()
            return None if row is None else _firing(row)

    def pending(self, stale: timedelta, limit: int = 100) -> list[Firing]:
        """Pending firings nobody holds a live claim on, oldest first."""
        cutoff = _now() - stale
        with self._db.session() as session:
            query = (
                select(FiringRow)
                .where(FiringRow.state == PENDING)
                .where(or_(FiringRow.claimed_at.is_(None), FiringRow.claimed_at < cutoff))
                .order_by(FiringRow.created_at)
                .limit(limit)
            )
            return [_firing(row) for row in session.scalars(query)]

    def claim(self, firing_id: str, replica: str, stale: timedelta) -> bool:
        """Take a pending firing to submit it; False if another replica holds a live claim."""
        now = _now()
        with self._db.session() as session:
            result = session.execute(
                update(FiringRow)
                .where(FiringRow.id == firing_id, FiringRow.state == PENDING)
                .where(or_(FiringRow.claimed_at.is_(None), FiringRow.claimed_at < now - stale))
                .values(claimed_by=replica, claimed_at=now, updated_at=now)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def release(self, firing_id: str, *, error: str | None = None, attempted: bool = False) -> None:
        """Give a claimed firing back (still pending), with why, counting the attempt."""
        values: dict[str, Any] = {"claimed_by": None, "claimed_at": None, "updated_at": _now()}
        if error is not None:
            values["last_error"] = error
        if attempted:
            values["attempts"] = FiringRow.attempts + 1
        self._set(firing_id, (PENDING,), **values)

    def mark_submitted(self, firing_id: str) -> bool:
        return self._set(firing_id, (PENDING,), state=SUBMITTED, attempts=FiringRow.attempts + 1)

    def mark_parked(self, firing_id: str, reason: str) -> bool:
        return self._set(firing_id, (PENDING,), state=PARKED, last_error=reason)

    def mark_skipped(self, firing_id: str, reason: str) -> bool:
        return self._set(firing_id, (PENDING,), state=SKIPPED, last_error=reason)

    def note_accepted(self, firing_id: str, request_id: str, job_name: str | None) -> None:
        """The worker made the Job: remember its name (replace cancels it by that name)."""
        self._set(firing_id, (PENDING, SUBMITTED, FINISHED), request_id=request_id,
                  job_name=job_name)  # fmt: skip

    def mark_finished(
        self, firing_id: str, job_state: str, request_id: str | None, job_name: str | None
    ) -> Firing | None:
        """From a final event; the firing when this was news, None for a repeat or a stranger."""
        values: dict[str, Any] = {"state": FINISHED, "job_state": job_state}
        if request_id:
            values["request_id"] = request_id
        if job_name:
            values["job_name"] = job_name
        if not self._set(firing_id, (PENDING, SUBMITTED), **values):
            return None
        return self.get(firing_id)

    def mark_purged(self, firing_id: str, reason: str) -> Firing | None:
        """Its request was taken out of the work queue unrun: finished, job state `purged`;
        None when the firing is unknown or had finished already."""
        if not self._set(firing_id, (PENDING, SUBMITTED), state=FINISHED, job_state=PURGED,
                         last_error=reason):  # fmt: skip
            return None
        return self.get(firing_id)

    def in_flight(self, entry: str) -> int:
        """Submitted and not yet finished firings of `entry`."""
        with self._db.session() as session:
            query = select(func.count()).select_from(FiringRow)
            query = query.where(FiringRow.entry == entry, FiringRow.state == SUBMITTED)
            return int(session.scalar(query) or 0)

    def running(self, entry: str) -> list[Firing]:
        with self._db.session() as session:
            query = select(FiringRow).where(FiringRow.entry == entry, FiringRow.state == SUBMITTED)
            return [_firing(row) for row in session.scalars(query.order_by(FiringRow.created_at))]

    def counts(self) -> dict[str, int]:
        """How many firings are in each state (for the metrics)."""
        with self._db.session() as session:
            query = select(FiringRow.state, func.count()).group_by(FiringRow.state)
            return {str(state): int(count) for state, count in session.execute(query)}

    def in_state(self, state: str, limit: int = 500) -> list[Firing]:
        with self._db.session() as session:
            query = select(FiringRow).where(FiringRow.state == state)
            query = query.order_by(FiringRow.created_at).limit(limit)
            return [_firing(row) for row in session.scalars(query)]

    def _set(self, firing_id: str, states: tuple[str, ...], **values: Any) -> bool:
        values.setdefault("updated_at", _now())
        with self._db.session() as session:
            result = session.execute(
                update(FiringRow)
                .where(FiringRow.id == firing_id, FiringRow.state.in_(states))
                .values(**values)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def firing_id_of(correlation_id: object) -> str | None:
    """The firing id in a correlation id `flow:<32 hex>`, else None (not the flow's request)."""
    if not isinstance(correlation_id, str) or not correlation_id.startswith(CORRELATION_PREFIX):
        return None
    tail = correlation_id[len(CORRELATION_PREFIX) :]
    return tail if len(tail) == 32 and all(c in "0123456789abcdef" for c in tail) else None
