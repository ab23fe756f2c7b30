"""Stalled flags: the `flags` table, the facts a scan reads, and syncing what a scan found.

A flag is one stall of one subject: kind `pending` or `overdue` (subject: a request id) or
`quiet-replica` (subject: a worker replica's name), `since` the moment its cause began (the
Job's acceptance, its pod's start, the replica's last heartbeat). (kind, subject, since) is
the key: every replica's scan computes the same key from the same history, so two replicas
raising one flag insert one row (an upsert), and a subject stalling again later (a replica
that came back and went quiet again) gets a new row. Replicas scan at slightly different
moments (and clocks): a scan never clears a flag raised at a later `now` than its own, and a
flag cleared by a scan that read the history just before its cause was recorded opens again
at the next scan that finds it. A flag is open
until its cause ends: `sync` sets `cleared_at` on every open flag of a kind that the scan did
not find again. Cleared flags are kept for the history's retention, then purged.

The questions a scan asks (`stalled_candidates`) are here too: the Jobs still accepted and
those running (each an index range on the state: the Jobs in flight, not the history), and
the replicas not stopping. The scan (`stalled.judge`) applies the rules to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from mstc_flow.store.db import Base, Database
from mstc_flow.store.history_records import iso, utc
from mstc_flow.store.history_tables import TEXT_LENGTH, HistoryJob, HistoryReplica, UtcDateTime

__all__ = [
    "FLAG_KINDS",
    "JOB_FLAG_KINDS",
    "Flag",
    "FlagRow",
    "Flags",
    "Found",
    "RunningJob",
    "StallFacts",
]

PENDING, OVERDUE, QUIET_REPLICA = "pending", "overdue", "quiet-replica"
JOB_FLAG_KINDS = (PENDING, OVERDUE)
FLAG_KINDS = (*JOB_FLAG_KINDS, QUIET_REPLICA)


class FlagRow(Base):
    """One stall of one subject (created by revision `0005_flags`)."""

    __tablename__ = "flags"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(TEXT_LENGTH), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    detail: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime())
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_flags_subject", "subject", "cleared_at"),
        Index("ix_flags_open", "cleared_at", "kind"),
    )


@dataclass(frozen=True)
class Found:
    """What a scan found stalled now: the key's subject and since, and a sentence."""

    subject: str
    since: datetime
    detail: str


@dataclass(frozen=True)
class Flag:
    kind: str
    subject: str
    since: datetime
    detail: str
    raised_at: datetime
    cleared_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "since": iso(self.since),
            "detail": self.detail,
            "raisedAt": iso(self.raised_at),
            "clearedAt": iso(self.cleared_at) if self.cleared_at else None,
        }


@dataclass(frozen=True)
class RunningJob:
    request_id: str
    correlation_id: str | None
    running_at: datetime


@dataclass(frozen=True)
class StallFacts:
    """The history's rows a scan judges: see `Flags.stalled_candidates`."""

    pending: Sequence[tuple[str, datetime]]  # (request id, accepted at)
    running: Sequence[RunningJob]
    replicas: Sequence[tuple[str, datetime, float | None]]  # not stopping: (name, last, interval)


class Flags:
    """The flags' reads and writes over one `Database` (build once, pass down)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def stalled_candidates(self) -> StallFacts:
        """Jobs still `accepted` (no running pod), Jobs `running`, and the replicas that did
        not say they stop."""
        pending = select(HistoryJob.request_id, HistoryJob.accepted_at, HistoryJob.seen_at).where(
            HistoryJob.state == "accepted"
        )
        running = select(
            HistoryJob.request_id, HistoryJob.correlation_id, HistoryJob.running_at,
            HistoryJob.state_at,
        ).where(HistoryJob.state == "running")  # fmt: skip
        replicas = select(
            HistoryReplica.replica, HistoryReplica.last_seen, HistoryReplica.interval_seconds
        ).where(HistoryReplica.stopping.is_(False))
        with self._db.session() as session:
            return StallFacts(
                pending=[
                    (rid, accepted or seen) for rid, accepted, seen in session.execute(pending)
                ],
                running=[
                    RunningJob(rid, cid, started or state_at)
                    for rid, cid, started, state_at in session.execute(running)
                ],
                replicas=[(name, last, every) for name, last, every in session.execute(replicas)],
            )

    def sync(self, kind: str, found: Iterable[Found], now: datetime) -> None:
        """Raise a flag for each of `found` not open yet; clear the open flags of `kind` that
        are not among them (their cause ended)."""
        rows = {(f.subject, utc(f.since)): f for f in found}
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        with self._db.session() as session:
            if rows:
                values = [
                    {
                        "kind": kind,
                        "subject": subject,
                        "since": since,
                        "detail": f.detail,
                        "raised_at": now,
                    }
                    for (subject, since), f in rows.items()
                ]
                # A flag a racing scan cleared wrongly (see below) opens again: its cause is here.
                raise_or_reopen = (
                    insert(FlagRow)
                    .values(values)
                    .on_conflict_do_update(
                        index_elements=["kind", "subject", "since"],
                        set_={"cleared_at": None},
                        where=FlagRow.cleared_at.is_not(None),
                    )
                )
                session.execute(raise_or_reopen)
            open_now = select(FlagRow.subject, FlagRow.since).where(
                FlagRow.kind == kind, FlagRow.cleared_at.is_(None)
            )
            ended = [key for key in session.execute(open_now) if (key[0], utc(key[1])) not in rows]
            for subject, since in ended:
                session.execute(
                    update(FlagRow)
                    .where(
                        FlagRow.kind == kind,
                        FlagRow.subject == subject,
                        FlagRow.since == since,
                        FlagRow.cleared_at.is_(None),
                        # Raised by a scan that judged later than this one (another replica,
                        # whose clock may also run ahead): this one's "not found" is older news.
                        FlagRow.raised_at <= now,
                    )
                    .values(cleared_at=now)
                )

    def open(self) -> list[Flag]:
        """Every open flag, the oldest cause first."""
        statement = (
            select(FlagRow)
            .where(FlagRow.cleared_at.is_(None))
            .order_by(FlagRow.since, FlagRow.kind, FlagRow.subject)
        )
        with self._db.session() as session:
            return [_flag(row) for row in session.scalars(statement)]

    def open_of(self, subjects: Sequence[str]) -> Mapping[str, list[Flag]]:
        """The open flags of each of `subjects` (those without any are left out)."""
        if not subjects:
            return {}
        statement = (
            select(FlagRow)
            .where(FlagRow.subject.in_(list(subjects)), FlagRow.cleared_at.is_(None))
            .order_by(FlagRow.since)
        )
        found: dict[str, list[Flag]] = {}
        with self._db.session() as session:
            for row in session.scalars(statement):
                found.setdefault(row.subject, []).append(_flag(row))
        return found

    def purge(self, cleared_before: datetime) -> int:
        """Delete the flags cleared before the bound; how many went."""
        with self._db.session() as session:
            gone = session.execute(delete(FlagRow).where(FlagRow.cleared_at < utc(cleared_before)))
            return int(getattr(gone, "rowcount", 0) or 0)


def _flag(row: FlagRow) -> Flag:
    return Flag(row.kind, row.subject, row.since, row.detail, row.raised_at, row.cleared_at)
