"""The history's promises, on SQLite and on PostgreSQL (the `database` fixture runs both).

Recording is idempotent by eventId and independent of arrival order; every filter of
`list_jobs` selects exactly what it names; pages follow each other without gaps or repeats;
`purge` removes what finished before its cutoff with its events and labels; heartbeats keep
each replica's newest; the overview's counts by state and finishing times (and their
per-minute buckets) are what was recorded; the migrations run again on an existing store
without harm.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from mstc_flow.desk import per_minute
from mstc_flow.errors import BadQuery, NotFound, PermanentError, TransientError
from mstc_flow.store.db import Database
from mstc_flow.store.history import History, JobQuery
from tests.flow.history_support import T0, event, everything, heartbeat, lifecycle, rid


@pytest.fixture
def history(database: Database) -> History:
    return History(database)


# --- recording ---------------------------------------------------------------------------------


def test_the_same_event_twice_is_recorded_once(history: History) -> None:
    body = event("accepted", rid(1))
    assert history.record_event(body) is True
    assert history.record_event(dict(body)) is False
    assert len(history.events(rid(1))) == 1
    assert history.get_job(rid(1)).state == "accepted"


@pytest.mark.parametrize("order", list(itertools.permutations(["accepted", "running", "failed"])))
def test_every_arrival_order_gives_the_same_record(history: History, order: tuple[str]) -> None:
    times = {"accepted": 0, "running": 1, "failed": 2}
    for state in order:
        assert history.record_event(event(state, rid(2), times[state]))
    job = history.get_job(rid(2))
    assert job.state == "failed"  # a late accepted or running never overwrites the final state
    assert (job.accepted_at, job.running_at) == (T0, T0 + timedelta(seconds=1))
    assert job.finished_at == T0 + timedelta(seconds=1.5)
    assert (job.exit_code, job.reason, job.log_object) == (3, "BackoffLimitExceeded",
                                                           f"convert-{rid(2)[:5]}.log")  # fmt: skip
    assert job.request == {"image": "example/convert:1", "jobName": "convert"}
    assert (job.job_name, job.namespace, job.replica) == (f"convert-{rid(2)[:5]}", "jobs",
                                                          "worker-a")  # fmt: skip
    assert job.to_json()["finishedAt"] == "2026-05-01T12:00:01.500Z"
    assert [e["event"] for e in history.events(rid(2))] == ["accepted", "running", "failed"]


def test_an_event_without_a_field_does_not_blank_it(history: History) -> None:
    history.record_event(event("accepted", rid(3)))
    history.record_event(event("running", rid(3), 1, image=None, labels={}, correlationId=None))
    job = history.get_job(rid(3))
    assert (job.image, job.labels, job.correlation_id) == (
        "example/convert:1", {"team": "blue"}, "flow:" + "0" * 32
    )  # fmt: skip


def test_the_replica_that_accepted_the_request_is_its_replica(history: History) -> None:
    history.record_event(event("succeeded", rid(4), 5, replica="worker-b"))
    history.record_event(event("accepted", rid(4), 0, replica="worker-a"))
    assert history.get_job(rid(4)).replica == "worker-a"


def test_a_rejected_request_without_a_job_is_recorded_by_its_request_id(history: History) -> None:
    body = event("rejected", rid(5), jobName=None, namespace=None, image=None, exitCode=None)
    assert history.record_event(body)
    job = history.get_job(rid(5))
    assert (job.state, job.job_name, job.accepted_at) == ("rejected", None, None)
    with pytest.raises(NotFound):
        history.get_job("convert-00000")


def test_a_job_is_found_by_its_made_name(history: History) -> None:
    lifecycle(history, rid(6), 0)
    assert history.get_job(f"convert-{rid(6)[:5]}").request_id == rid(6)
    with pytest.raises(NotFound):
        history.get_job("nothing-like-it")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"eventId": "x:accepted", "event": "accepted"},
        event("exploded", rid(7)),
        {**event("accepted", rid(7)), "requestId": 7},
    ],
)
def test_an_event_that_cannot_be_recorded_is_refused(history: History, body: Any) -> None:
    with pytest.raises(PermanentError):
        history.record_event(body)


# --- listing -----------------------------------------------------------------------------------


@pytest.fixture
def varied(history: History) -> History:
    """Six jobs, one apart each (rid(10) oldest), differing in one field each."""
    lifecycle(history, rid(10), 0)
    lifecycle(history, rid(11), 10, final="failed")
    lifecycle(history, rid(12), 20, requestedName="resize", image="example/resize:2")
    lifecycle(history, rid(13), 30, labels={"team": "red", "tier": "gold"})
    lifecycle(history, rid(14), 40, correlationId="cli:abc")
    history.record_event(event("accepted", rid(15), 50, jobName="special-name"))
    return history


FILTERS = [
    (JobQuery(), [15, 14, 13, 12, 11, 10]),
    (JobQuery(state="failed"), [11]),
    (JobQuery(state="accepted"), [15]),
    (JobQuery(name="resize"), [12]),  # the requested name
    (JobQuery(name="special-name"), [15]),  # the made name
    (JobQuery(label="team=red"), [13]),
    (JobQuery(label="tier=gold"), [13]),
    (JobQuery(label="team=blue"), [15, 14, 12, 11, 10]),
    (JobQuery(image="example/resize:2"), [12]),
    (JobQuery(since=T0 + timedelta(seconds=20), until=T0 + timedelta(seconds=40)), [13, 12]),
    (JobQuery(correlation_prefix="cli:"), [14]),
    (JobQuery(correlation_prefix="FLOW:"), []),  # a prefix is case-sensitive
    (JobQuery(correlation_prefix="flow:0"), [15, 13, 12, 11, 10]),
    (JobQuery(state="succeeded", label="team=blue", name="convert"), [14, 10]),
]


def test_each_filter_selects_what_it_names(varied: History) -> None:
    # One data set for every query (read-only), so the store is filled once per backend.
    for query, expected in FILTERS:
        assert everything(varied, query) == [rid(n) for n in expected], query


def test_a_label_listing_follows_a_job_whose_first_event_came_late(history: History) -> None:
    history.record_event(event("succeeded", rid(40), 100))  # first seen at 100 ...
    history.record_event(event("accepted", rid(41), 50))
    history.record_event(event("accepted", rid(40), 0))  # ... until its accepted (at 0) came
    assert everything(history, JobQuery(label="team=blue")) == [rid(41), rid(40)]
    assert everything(history, JobQuery(label="team=blue", limit=1)) == [rid(41), rid(40)]


def test_a_name_listing_pages_across_requested_and_made_names(history: History) -> None:
    history.record_event(event("accepted", rid(50), 0, requestedName="shared"))
    history.record_event(event("accepted", rid(51), 1, requestedName="other", jobName="shared"))
    history.record_event(event("accepted", rid(52), 2, requestedName="shared", jobName="shared"))
    history.record_event(event("accepted", rid(53), 3, requestedName="shared"))
    expected = [rid(53), rid(52), rid(51), rid(50)]
    assert everything(history, JobQuery(name="shared", limit=1)) == expected
    assert everything(history, JobQuery(name="shared", limit=3)) == expected


def test_pages_follow_each_other_without_gaps_or_repeats(history: History) -> None:
    # Several jobs share a first-seen time, so the cursor must order by the id as well.
    for n in range(23):
        history.record_event(event("accepted", rid(100 + n), n // 4))
    pages = []
    cursor = None
    while True:
        page = history.list_jobs(JobQuery(limit=5, cursor=cursor))
        pages.append([job.request_id for job in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    listed = [request_id for page in pages for request_id in page]
    expected = sorted((rid(100 + n) for n in range(23)), key=lambda r: (int(r, 16) - 100) // 4)
    assert listed == sorted(expected, key=lambda r: ((int(r, 16) - 100) // 4, r), reverse=True)


def test_a_job_recorded_between_pages_does_not_disturb_the_next_page(history: History) -> None:
    for n in range(6):
        history.record_event(event("accepted", rid(200 + n), n))
    first = history.list_jobs(JobQuery(limit=3))
    history.record_event(event("accepted", rid(300), 100))  # newer than everything
    second = history.list_jobs(JobQuery(limit=3, cursor=first.next_cursor))
    assert [j.request_id for j in second.items] == [rid(202), rid(201), rid(200)]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        (JobQuery(limit=0), "limit"),
        (JobQuery(limit=501), "limit"),
        (JobQuery(label="team"), "label"),
        (JobQuery(label="=blue"), "label"),
        (JobQuery(state="done"), "state"),
        (JobQuery(cursor="not-a-cursor"), "cursor"),
        (JobQuery(since=T0, until=T0), "since"),
    ],
)
def test_a_query_it_cannot_answer_names_the_parameter(
    history: History, query: JobQuery, parameter: str
) -> None:
    with pytest.raises(BadQuery, match=parameter):
        history.list_jobs(query)


def test_the_largest_page_is_allowed(history: History) -> None:
    assert history.list_jobs(JobQuery(limit=500)).items == []


# --- the overview's numbers --------------------------------------------------------------------


def test_counts_by_state_are_of_all_jobs_or_of_those_seen_since(history: History) -> None:
    lifecycle(history, rid(30), 0)
    lifecycle(history, rid(31), 100, final="failed")
    history.record_event(event("accepted", rid(32), 200))
    assert history.state_counts() == {"succeeded": 1, "failed": 1, "accepted": 1}
    assert history.state_counts(T0 + timedelta(seconds=100)) == {"failed": 1, "accepted": 1}


def test_finished_since_gives_when_each_job_finished_from_then_on(history: History) -> None:
    lifecycle(history, rid(33), 0)  # finished at 1.5 s
    lifecycle(history, rid(34), 100)  # finished at 101.5 s
    history.record_event(event("running", rid(35), 150))
    assert history.finished_since(T0 + timedelta(seconds=50)) == [T0 + timedelta(seconds=101.5)]


def test_per_minute_counts_each_moment_in_its_minute_before_now() -> None:
    now = T0 + timedelta(minutes=3)
    moments = [T0 - timedelta(seconds=1), T0, T0 + timedelta(seconds=59),
               T0 + timedelta(minutes=2, seconds=30), now]  # fmt: skip
    assert per_minute(moments, now, 3) == [2, 0, 1]


# --- retention ---------------------------------------------------------------------------------


def test_purge_removes_what_finished_before_the_cutoff_with_its_events(history: History) -> None:
    lifecycle(history, rid(20), 0)  # finished at 1.5 s
    lifecycle(history, rid(21), 100)  # finished at 101.5 s
    history.record_event(event("accepted", rid(22), 0))  # never finished
    assert history.purge(T0 + timedelta(seconds=50)) == 1
    assert everything(history, JobQuery()) == [rid(21), rid(22)]
    assert history.events(rid(20)) == []
    assert everything(history, JobQuery(label="team=blue")) == [rid(21), rid(22)]
    assert history.purge(T0 + timedelta(seconds=50)) == 0


# --- heartbeats --------------------------------------------------------------------------------


def test_a_replica_keeps_its_newest_heartbeat(history: History) -> None:
    history.record_heartbeat(heartbeat("worker-a", 10, inFlight=7))
    history.record_heartbeat(heartbeat("worker-a", 5, inFlight=1))  # late, older
    history.record_heartbeat(heartbeat("worker-b", 3))
    [a, b] = history.replicas()
    assert (a.replica, a.in_flight, a.stopping) == ("worker-a", 7, False)
    assert a.last_seen == T0 + timedelta(seconds=10)
    assert (a.capacity, a.version, a.interval_seconds) == (100, "0.1.0", 5.0)
    assert a.started_at == T0 - timedelta(seconds=60)
    assert b.replica == "worker-b"
    assert a.to_json()["lastSeen"] == "2026-05-01T12:00:10.000Z"


def test_a_stopping_replica_says_so_until_it_beats_again(history: History) -> None:
    history.record_heartbeat(heartbeat("worker-a", 10, kind="stopping", inFlight=0))
    assert history.replicas()[0].stopping is True
    history.record_heartbeat(heartbeat("worker-a", 20))
    assert history.replicas()[0].stopping is False


def test_a_heartbeat_without_a_replica_is_refused(history: History) -> None:
    with pytest.raises(PermanentError):
        history.record_heartbeat({"event": "heartbeat", "replica": 5})


# --- migrations --------------------------------------------------------------------------------


def test_migrations_run_again_on_an_existing_store(database: Database) -> None:
    History(database).record_event(event("accepted", rid(30)))
    url = database.engine.url.render_as_string(hide_password=False)
    again = Database.open(url)
    try:
        assert History(again).get_job(rid(30)).state == "accepted"
        again.migrate()
        assert History(again).record_event(event("running", rid(30), 1))
    finally:
        again.close()


def test_an_unreachable_store_is_a_transient_error() -> None:
    # Nothing listens on port 1: the driver's connection error, as when PostgreSQL is down.
    unreachable = Database.open("postgresql+psycopg://u:p@127.0.0.1:1/none", migrate=False)
    try:
        history = History(unreachable)
        with pytest.raises(TransientError):
            history.list_jobs(JobQuery())
        with pytest.raises(TransientError):
            history.record_event(event("accepted", rid(31)))
    finally:
        unreachable.close()
