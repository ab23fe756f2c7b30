"""The service's rules for a request's life, exactly, on an in-memory broker and pool.

Each test is one sequence of events the test decides (a delivery, a Job accepted, a process
dying) and checks what the service did with the broker and the processes, in order. The same
rules are checked end to end, less exactly, against the real stack in tests/worker and
tests/faults.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mstc_worker import admission
from mstc_worker.messages import ReleaseJob, WorkerReady
from mstc_worker.protocol import Outcome, Status
from tests.support.fakes import job_name
from tests.support.service_rig import ServiceRig
from tests.unit.conftest import MakeBody, MakeSettings

CLIENT = "amq.gen-client"

MakeRig = Callable[..., ServiceRig]


@pytest.fixture
def make_rig(make_settings: MakeSettings) -> MakeRig:
    def make(**env: str) -> ServiceRig:
        return ServiceRig(make_settings(**{"MSTC_PROCESSES": "2", **env}))

    return make


@pytest.fixture
def rig(make_rig: MakeRig) -> ServiceRig:
    return make_rig(MSTC_CONCURRENCY="2")


def succeeded(name: str) -> Outcome:
    return Outcome(status=Status.SUCCEEDED, job_name=name, namespace="mstc-dev", exit_code=0)


def test_a_request_is_acked_only_once_its_job_exists(rig: ServiceRig, make_body: MakeBody) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    assert rig.events("ack", "nack") == []  # handed to a process, but no Job yet
    assert len(rig.broker.unacked) == 1

    rig.pool.accept(start)
    rig.settle()

    assert rig.events("send", "ack")[-1] == ("ack", 1)
    assert rig.broker.unacked == {}
    assert rig.replies_to(CLIENT) == []  # acked is not answered: the Job still runs


def test_a_rejected_request_is_replied_and_acked_at_once(rig: ServiceRig) -> None:
    rig.request(b'{"jobName": "no-image"}', reply_to=CLIENT, correlation_id="7")

    assert rig.pool.starts() == []
    [reply] = rig.replies_to(CLIENT)
    assert reply["status"] == "rejected"
    assert rig.events("publish", "ack", "nack") == [("publish", CLIENT, "7"), ("ack", 1)]
    assert rig.broker.unacked == {}
    assert rig.requests_done("rejected") == 1


def test_the_reply_is_published_before_the_job_is_released(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    name = rig.pool.accept(start)
    rig.settle()

    rig.pool.finish(start, succeeded(name))
    rig.settle()

    [reply] = rig.replies_to(CLIENT)
    assert (reply["status"], reply["jobName"]) == ("succeeded", name)
    after_start = rig.events("publish", "send")[1:]
    assert after_start == [
        ("publish", CLIENT, "1"),
        ("send", rig.pool.worker_of(start), ReleaseJob(name, mark_final_event=True)),
    ]


def test_a_request_whose_job_was_answered_before_it_was_accepted_is_acked_then(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    # The process made the Job and stopped before saying so; the Job finished all the same.
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    rig.pool.receive(start)
    rig.settle()
    assert rig.broker.unacked  # no Job known to the service yet

    rig.pool.finish(start, succeeded(job_name(start)))
    rig.settle()

    assert len(rig.replies_to(CLIENT)) == 1
    assert rig.broker.unacked == {}  # answered: never back in the queue to be answered again
    assert rig.service.in_flight == 0
    rig.pool.accept(start)  # what the process says late changes nothing
    rig.settle()
    assert rig.service.in_flight == 0
    assert len(rig.replies_to(CLIENT)) == 1


def test_a_request_at_the_cap_is_held_and_starts_when_a_slot_frees(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    for n in range(3):
        rig.broker.enqueue(make_body(jobName=f"job-{n}"), reply_to=CLIENT, correlation_id=str(n))
    rig.settle()
    first, second = rig.pool.starts()
    assert [m.correlation_id for m in rig.broker.queue] == ["2"]  # the prefetch is full

    # Accepted Jobs still count: acking opens the prefetch window, the third one comes and
    # is held (unacked), not handed to a process.
    for start in (first, second):
        rig.pool.accept(start)
    rig.settle()
    assert len(rig.pool.starts()) == 2
    assert [d.correlation_id for d, _ in rig.broker.unacked.values()] == ["2"]

    # Finished and replied is not enough either: the slot frees when the Job ends.
    rig.pool.finish(first, succeeded(job_name(first)))
    rig.settle()
    assert len(rig.pool.starts()) == 2
    rig.pool.end(first)
    rig.settle()

    assert [s.route.correlation_id for s in rig.pool.starts()] == ["0", "1", "2"]
    assert rig.events("pause", "resume", "returned", "nack", "republish") == []


def test_a_request_held_when_the_connection_drops_is_left_to_its_redelivery(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    for n in range(3):
        rig.broker.enqueue(make_body(jobName=f"job-{n}"), reply_to=CLIENT, correlation_id=str(n))
    rig.settle()
    first, second = rig.pool.starts()
    for start in (first, second):
        rig.pool.accept(start)
    rig.settle()
    assert [d.correlation_id for d, _ in rig.broker.unacked.values()] == ["2"]  # held

    rig.broker.close()  # RabbitMQ restarts: the held one goes back to the queue
    rig.broker.attach(rig.broker.stop_requested, rig.service._on_delivery)
    for start in (first, second):
        rig.pool.finish(start, succeeded(job_name(start)))
        rig.pool.end(start)
    rig.settle()

    # Started once, from the broker's copy, not also from the stale held delivery.
    assert [s.route.correlation_id for s in rig.pool.starts()] == ["0", "1", "2"]
    assert [d.redelivered for d, _ in rig.broker.unacked.values()] == [True]


def test_a_request_still_in_a_dead_process_s_inbox_is_sent_again_uncharged(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_PROCESSES="1", MSTC_CONCURRENCY="2")
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [lost] = rig.pool.starts()

    rig.pool.die(0)  # before it took the request from its inbox
    rig.settle()

    _, again = rig.pool.starts()
    assert (again.route.correlation_id, again.key != lost.key) == ("1", True)
    assert rig.events("ack", "nack", "republish") == []  # the same delivery, still ours
    assert rig.dead_letters() == []
    # What the dead incarnation may have said late about its key changes nothing.
    rig.pool.accept(lost)
    rig.settle()
    assert rig.events("ack") == []
    rig.pool.accept(again)
    rig.settle()
    assert rig.events("ack", "nack", "republish") == [("ack", 1)]
    assert rig.service.in_flight == 1


def test_a_request_sent_to_the_new_process_before_the_death_is_heard_is_untouched(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_PROCESSES="1", MSTC_CONCURRENCY="2")
    rig.broker.enqueue(make_body(), reply_to=CLIENT, correlation_id="1")
    rig.pool.die(0)  # the pool has started incarnation 2 already ...
    rig.broker.dispatch()  # ... and the request goes to it, before WorkerDied is handled
    rig.settle()

    [start] = rig.pool.starts()
    assert rig.events("ack", "nack", "republish") == []
    rig.pool.accept(start)
    rig.settle()
    assert rig.events("ack", "nack", "republish") == [("ack", 1)]
    assert rig.service.in_flight == 1
    assert rig.dead_letters() == []


def test_a_request_a_dead_process_was_handling_gets_one_more_try_counted_in_a_header(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1", headers={"x-client": "a"})
    [start] = rig.pool.starts()
    rig.pool.receive(start)

    rig.pool.die(rig.pool.worker_of(start))
    rig.settle()

    assert rig.events("ack", "nack", "republish")[:2] == [("republish", 1), ("ack", 1)]
    assert rig.replies_to(CLIENT) == []
    assert rig.dead_letters() == []
    # Back at the end of the queue with the count, not marked redelivered; it comes again.
    _, retry = rig.pool.starts()
    [(delivery, _)] = rig.broker.unacked.values()
    assert (retry.route.correlation_id, delivery.redelivered) == ("1", False)
    assert delivery.headers == {"x-client": "a", "x-mstc-attempts": 1}


def test_a_redelivered_request_still_gets_its_one_more_try(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    # Redelivered by the broker for reasons of its own (a lost connection, a cancelled
    # consumer): not a try of this request.
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1", redelivered=True)
    [start] = rig.pool.starts()
    rig.pool.receive(start)
    rig.pool.die(rig.pool.worker_of(start))
    rig.settle()

    assert rig.dead_letters() == []
    assert rig.replies_to(CLIENT) == []
    assert len(rig.pool.starts()) == 2


def test_a_request_that_crashes_a_process_twice_is_dead_lettered_and_answered(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1", headers={"x-client": "a"})
    for attempt in (0, 1):
        start = rig.pool.starts()[attempt]
        rig.pool.receive(start)
        rig.pool.die(rig.pool.worker_of(start), exit_code=-9)
        rig.settle()

    [dead] = rig.dead_letters()
    assert dead.body == make_body()
    assert dead.correlation_id == "1"
    assert dead.headers["x-client"] == "a"
    assert "died (exit code -9)" in dead.headers["x-mstc-reason"]
    assert (dead.headers["x-mstc-reply-to"], dead.headers["x-mstc-correlation-id"]) == (CLIENT, "1")
    [reply] = rig.replies_to(CLIENT)
    assert (reply["status"], reply["reason"]) == ("error", "WorkerCrashed")
    assert reply["result"].startswith("WorkerCrashed: a worker process died")
    dead_queue = rig.settings.dead_letter_queue
    assert rig.events("publish", "ack", "nack", "republish") == [
        ("republish", 1),
        ("ack", 1),
        ("publish", dead_queue, "1"),
        ("publish", CLIENT, "1"),
        ("ack", 2),
    ]
    assert list(rig.broker.queue) == []
    assert rig.requests_done("error") == 1


def test_a_dead_process_s_accepted_jobs_stop_counting(rig: ServiceRig, make_body: MakeBody) -> None:
    rig.broker.enqueue(make_body(jobName="a"), reply_to=CLIENT, correlation_id="a")
    rig.broker.enqueue(make_body(jobName="b"), reply_to=CLIENT, correlation_id="b")
    rig.broker.enqueue(make_body(jobName="c"), reply_to=CLIENT, correlation_id="c")
    rig.settle()
    for start in rig.pool.starts():
        rig.pool.accept(start)
    rig.settle()
    assert len(rig.pool.starts()) == 2  # "c" is held at the cap

    dying = {rig.pool.worker_of(s) for s in rig.pool.starts()}
    for worker in dying:
        rig.pool.die(worker)
    rig.settle()

    # The restarted processes finish those Jobs; the replica may take new work meanwhile.
    assert rig.events("nack") == []
    assert [s.route.correlation_id for s in rig.pool.starts()] == ["a", "b", "c"]


def test_every_process_death_is_counted_holding_work_or_not(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    restarts = "mstc_worker_process_restarts_total"
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    holder = rig.pool.worker_of(start)

    rig.pool.die(holder)
    rig.pool.die(holder)  # the retry is not there yet: died holding nothing
    rig.settle()

    assert rig.metrics.registry.get_sample_value(restarts) == 2


def test_a_transient_start_failure_is_retried_once_then_answered(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    unreachable = Outcome(status=Status.ERROR, reason="KubeUnavailable", error="no API server",
                          error_type="KubeUnavailable")  # fmt: skip
    for attempt in (0, 1):
        rig.pool.fail_start(rig.pool.starts()[attempt], unreachable, transient=True)
        rig.settle()

    [reply] = rig.replies_to(CLIENT)
    assert (reply["status"], reply["result"]) == ("error", "KubeUnavailable: no API server")
    assert rig.events("ack", "nack", "republish") == [("republish", 1), ("ack", 1), ("ack", 2)]
    assert rig.dead_letters() == []


def test_a_transient_start_failure_of_a_redelivered_request_is_retried(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1", redelivered=True)
    unreachable = Outcome(status=Status.ERROR, reason="KubeUnavailable", error="no API server",
                          error_type="KubeUnavailable")  # fmt: skip
    rig.pool.fail_start(rig.pool.starts()[0], unreachable, transient=True)
    rig.settle()

    assert rig.replies_to(CLIENT) == []
    assert len(rig.pool.starts()) == 2


def test_readiness_needs_every_process_ready_and_ends_with_the_drain(rig: ServiceRig) -> None:
    ready = rig.http.endpoints.is_ready
    rig.pool.say(WorkerReady(0))
    rig.settle()
    assert not ready()
    rig.pool.say(WorkerReady(1))
    rig.settle()
    assert ready()

    rig.service.stop()
    assert not ready()


def test_sigterm_stops_consuming_and_waits_for_requests_in_flight(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig: ServiceRig = make_rig(MSTC_CONCURRENCY="5", MSTC_SHUTDOWN_GRACE_SECONDS="60")
    rig.request(make_body(), reply_to=CLIENT, correlation_id="1")
    [start] = rig.pool.starts()
    rig.pool.accept(start)
    rig.settle()

    rig.service.stop()  # what SIGTERM does
    rig.request(make_body(jobName="late"), reply_to=CLIENT, correlation_id="late")
    assert rig.broker.paused
    assert [m.correlation_id for m in rig.broker.queue] == ["late"]
    # A bounded wait for something that must not happen: the Job is still in flight.
    assert not rig.broker.stop_requested.wait(0.3)

    rig.pool.finish(start, succeeded(job_name(start)))
    rig.pool.end(start)
    rig.settle()

    assert rig.broker.stop_requested.wait(5)  # at once, not after the 60 s grace
    assert rig.replies_to(CLIENT)[0]["status"] == "succeeded"
    assert len(rig.pool.starts()) == 1


def test_after_the_grace_what_is_left_is_handed_back(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig: ServiceRig = make_rig(MSTC_CONCURRENCY="5", MSTC_SHUTDOWN_GRACE_SECONDS="0")
    rig.broker.enqueue(make_body(jobName="running"), reply_to=CLIENT, correlation_id="running")
    rig.broker.enqueue(make_body(jobName="waiting"), reply_to=CLIENT, correlation_id="waiting")
    rig.settle()
    running, _waiting = rig.pool.starts()
    rig.pool.accept(running)
    rig.settle()

    rig.service.stop()
    assert rig.broker.stop_requested.wait(5)
    rig.broker.close()  # what Broker.run does once stop is set

    # The unaccepted request goes back to the queue; the running Job is left for adoption.
    assert [(m.correlation_id, m.redelivered) for m in rig.broker.queue] == [("waiting", True)]
    assert rig.events("ack", "nack") == [("ack", 1)]
    assert rig.replies_to(CLIENT) == []
    assert not [m for _, m in rig.pool.sent if isinstance(m, ReleaseJob)]
    assert json.loads(rig.broker.queue[0].body)["jobName"] == "waiting"


def test_at_the_cap_no_delivery_is_handed_over_only_to_be_returned(
    rig: ServiceRig, make_body: MakeBody
) -> None:
    for n in range(6):
        rig.broker.enqueue(make_body(jobName=f"job-{n}"), reply_to=CLIENT, correlation_id=str(n))
    rig.settle()
    for start in rig.pool.starts():
        rig.pool.accept(start)
    rig.settle()

    first = rig.pool.starts()[0]
    rig.pool.finish(first, succeeded(job_name(first)))
    rig.pool.end(first)
    rig.settle()

    assert rig.events("returned") == []
    assert not [m.correlation_id for m in rig.broker.queue if m.redelivered]


def test_a_request_held_too_long_goes_back_to_the_end_of_the_queue(
    make_rig: MakeRig, make_body: MakeBody, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="1")
    rig.request(make_body(jobName="running"), reply_to=CLIENT, correlation_id="running")
    [running] = rig.pool.starts()
    rig.pool.accept(running)
    rig.settle()
    rig.request(make_body(jobName="held"), reply_to=CLIENT, correlation_id="held")
    rig.service.admission.return_long_held()
    assert rig.events("republish") == []  # not yet

    monkeypatch.setattr(admission, "HOLD_LIMIT_S", 0.0)
    rig.service.admission.return_long_held()  # what the service's timer does
    rig.settle()

    # Acked and published again (RabbitMQ closes a channel that holds one past its consumer
    # timeout), with no attempt counted and not marked redelivered.
    assert rig.events("republish", "ack", "nack")[-2:] == [("republish", 2), ("ack", 2)]
    [(delivery, _)] = rig.broker.unacked.values()  # it came straight back, and is held
    assert (delivery.correlation_id, delivery.redelivered) == ("held", False)
    assert "x-mstc-attempts" not in delivery.headers
    assert len(rig.pool.starts()) == 1


def test_sigterm_hands_held_requests_back_to_the_queue(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="1", MSTC_SHUTDOWN_GRACE_SECONDS="60")
    rig.request(make_body(jobName="running"), reply_to=CLIENT, correlation_id="running")
    [running] = rig.pool.starts()
    rig.pool.accept(running)
    rig.settle()
    rig.request(make_body(jobName="held"), reply_to=CLIENT, correlation_id="held")

    rig.service.stop()
    rig.settle()
    assert [m.correlation_id for m in rig.broker.queue] == ["held"]
    assert len(rig.pool.starts()) == 1
    rig.pool.finish(running, succeeded(job_name(running)))
    rig.pool.end(running)
    rig.settle()

    assert rig.broker.stop_requested.wait(5)
    assert [m.correlation_id for m in rig.broker.queue] == ["held"]
    assert len(rig.pool.starts()) == 1
