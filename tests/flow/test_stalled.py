"""The stalled flags' rules over a real store, on SQLite and PostgreSQL: what the scan flags
(pending, overdue, quiet-replica), when it clears, that scanning again changes nothing, and
the jobs listing's `flagged` filter. The history is written as the recorder writes it (events
at fixed times from T0); the scan runs at a chosen `now`. The scanning thread and the API
against a real worker are tested in tests/flow/test_flow_flags.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from mstc_flow.settings import FlowSettings, load_settings
from mstc_flow.stalled import StallScanner
from mstc_flow.store.db import Database
from mstc_flow.store.flags import Flag, FlagRow, Flags
from mstc_flow.store.history import History, JobQuery
from tests.flow.history_support import T0, event, heartbeat, rid

PENDING_SECONDS = 60
FLOW_ONE = "flow:" + "1" * 32


def settings() -> FlowSettings:
    return load_settings({
        "MSTC_FLOW_ADMIN_TOKEN": "a" * 16,
        "MSTC_FLOW_PENDING_FLAG_SECONDS": str(PENDING_SECONDS),
    })  # fmt: skip


def expect_ten_for_flow_one(correlation_id: str | None) -> float | None:
    return 10.0 if correlation_id == FLOW_ONE else None


class Scan:
    """The scanner over the test's store, run at `now = T0 + seconds`."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.history = History(database)
        self.flags = Flags(database)
        self.now = T0

        def clock() -> datetime:
            return self.now

        self.scanner = StallScanner(settings(), self.flags, expect_ten_for_flow_one, clock=clock)

    def at(self, seconds: float) -> list[Flag]:
        self.now = T0 + timedelta(seconds=seconds)
        self.scanner.scan()
        return self.flags.open()

    def all_rows(self) -> list[Flag]:
        return self.flags.open() + self.cleared()

    def cleared(self) -> list[Flag]:
        """The cleared flags (no port asks for them: the test reads the table)."""
        with self.database.session() as session:
            rows = session.scalars(select(FlagRow).where(FlagRow.cleared_at.is_not(None)))
            return [Flag(r.kind, r.subject, r.since, r.detail, r.raised_at, r.cleared_at)
                    for r in rows]  # fmt: skip


@pytest.fixture
def scan(database: Database) -> Scan:
    return Scan(database)


def kinds(flags: list[Flag]) -> list[tuple[str, str]]:
    return [(flag.kind, flag.subject) for flag in flags]


def test_a_job_accepted_without_a_running_pod_is_flagged_pending_after_the_setting(
    scan: Scan,
) -> None:
    scan.history.record_event(event("accepted", rid(1), 0))
    assert scan.at(PENDING_SECONDS - 1) == []
    (flag,) = scan.at(PENDING_SECONDS)
    assert (flag.kind, flag.subject, flag.since) == ("pending", rid(1), T0)
    assert flag.raised_at == T0 + timedelta(seconds=PENDING_SECONDS)
    assert "60 s" in flag.detail
    assert kinds(scan.at(PENDING_SECONDS + 5)) == [("pending", rid(1))]
    assert len(scan.all_rows()) == 1  # scanning again raises nothing new


@pytest.mark.parametrize(
    "then", [("running", 70), ("cancelled", 70), ("succeeded", 70)], ids=lambda t: t[0]
)
def test_the_pending_flag_clears_when_the_job_runs_or_ends(
    scan: Scan, then: tuple[str, float]
) -> None:
    scan.history.record_event(event("accepted", rid(1), 0))
    assert kinds(scan.at(PENDING_SECONDS)) == [("pending", rid(1))]
    state, seconds = then
    scan.history.record_event(event(state, rid(1), seconds))
    assert scan.at(seconds + 1) == []
    (cleared,) = scan.cleared()
    assert cleared.cleared_at == T0 + timedelta(seconds=seconds + 1)


def test_a_job_that_ran_at_once_is_never_pending(scan: Scan) -> None:
    scan.history.record_event(event("accepted", rid(1), 0))
    scan.history.record_event(event("running", rid(1), 1))
    assert scan.at(PENDING_SECONDS * 10) == []


def test_a_running_job_past_its_entrys_expectation_is_overdue_until_it_ends(scan: Scan) -> None:
    scan.history.record_event(event("accepted", rid(1), 0, correlationId=FLOW_ONE))
    scan.history.record_event(event("running", rid(1), 5, correlationId=FLOW_ONE))
    scan.history.record_event(event("accepted", rid(2), 0))  # no expectation declared
    scan.history.record_event(event("running", rid(2), 5))
    assert scan.at(14) == []
    (flag,) = scan.at(15)
    assert (flag.kind, flag.subject, flag.since) == ("overdue", rid(1), T0 + timedelta(seconds=5))
    assert kinds(scan.at(1000)) == [("overdue", rid(1))]
    scan.history.record_event(event("succeeded", rid(1), 1001, correlationId=FLOW_ONE))
    assert scan.at(1002) == []


def test_a_replica_silent_for_three_intervals_is_quiet_unless_it_said_stopping(
    scan: Scan,
) -> None:
    scan.history.record_heartbeat(heartbeat("worker-a", 0, intervalSeconds=5))
    scan.history.record_heartbeat(heartbeat("worker-b", 0, intervalSeconds=5))
    scan.history.record_heartbeat(heartbeat("worker-b", 1, kind="stopping", intervalSeconds=5))
    assert scan.at(14) == []
    (flag,) = scan.at(15)
    assert (flag.kind, flag.subject, flag.since) == ("quiet-replica", "worker-a", T0)
    assert "3 intervals of 5 s" in flag.detail
    assert kinds(scan.at(100)) == [("quiet-replica", "worker-a")]  # worker-b said it stops


def test_a_quiet_replica_that_beats_again_is_cleared_and_a_new_silence_is_a_new_flag(
    scan: Scan,
) -> None:
    scan.history.record_heartbeat(heartbeat("worker-a", 0, intervalSeconds=5))
    assert kinds(scan.at(20)) == [("quiet-replica", "worker-a")]
    scan.history.record_heartbeat(heartbeat("worker-a", 21, intervalSeconds=5))
    assert scan.at(22) == []
    (again,) = scan.at(40)
    assert again.since == T0 + timedelta(seconds=21)
    assert len(scan.all_rows()) == 2


def test_two_replicas_scanning_the_same_store_raise_one_flag(
    scan: Scan, database: Database
) -> None:
    other = Scan(database)
    scan.history.record_event(event("accepted", rid(1), 0))
    scan.at(PENDING_SECONDS + 1)
    other.at(PENDING_SECONDS + 2)
    assert kinds(scan.all_rows()) == [("pending", rid(1))]


def test_a_scan_judging_earlier_does_not_clear_a_flag_a_later_scan_raised(
    scan: Scan, database: Database
) -> None:
    behind = Scan(database)  # another replica, whose scan (or clock) is a moment behind
    scan.history.record_event(event("accepted", rid(1), 0))
    scan.at(PENDING_SECONDS + 1)
    assert behind.at(PENDING_SECONDS - 1) == [scan.flags.open()[0]]


def test_a_flag_cleared_by_a_scan_that_missed_its_cause_opens_again(
    scan: Scan, database: Database
) -> None:
    # The first scan read the history before the late `accepted` event was recorded.
    scan.at(PENDING_SECONDS + 1)
    other = Scan(database)
    other.history.record_event(event("accepted", rid(1), 0))
    other.at(PENDING_SECONDS)
    scan.flags.sync("pending", [], T0 + timedelta(seconds=PENDING_SECONDS + 1))  # its late sync
    assert scan.flags.open() == []
    (again,) = scan.at(PENDING_SECONDS + 2)
    assert (again.kind, again.subject, again.cleared_at) == ("pending", rid(1), None)
    assert len(scan.all_rows()) == 1


def test_the_listing_keeps_only_flagged_jobs_when_asked(scan: Scan) -> None:
    for n in range(1, 5):
        scan.history.record_event(event("accepted", rid(n), n))
    scan.history.record_event(event("running", rid(2), 5))
    scan.history.record_event(event("succeeded", rid(3), 6))
    scan.at(PENDING_SECONDS + 10)

    def listed(query: JobQuery) -> list[str]:
        return [job.request_id for job in scan.history.list_jobs(query).items]

    assert listed(JobQuery(flagged=True)) == [rid(4), rid(1)]
    assert listed(JobQuery(flagged=True, limit=1)) == [rid(4)]
    assert len(listed(JobQuery())) == 4
    assert scan.flags.open_of([rid(1), rid(2)]).keys() == {rid(1)}
