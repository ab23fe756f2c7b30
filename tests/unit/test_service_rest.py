"""The REST execute call's rules, exactly, on the in-memory broker and pool of `fakes`.

A REST request is not let in by a back door: the service publishes it to the work queue with
the connection's own reply queue and a fresh correlation id, and waits for the reply, so it
waits its turn at the cap and is acked, identified and answered as any AMQP request is. (The
token in front of it is the HTTP port's, tested in test_http; the same path end to end, in
tests/worker/test_rest.py.)
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import pytest

from mstc_worker.manifest import request_identity
from mstc_worker.messages import ReleaseJob
from mstc_worker.protocol import Outcome, Status
from tests.support.fakes import REPLY_QUEUE
from tests.support.service_rig import ServiceRig
from tests.unit.conftest import MakeBody, MakeSettings

CLIENT = "amq.gen-client"

MakeRig = Callable[..., ServiceRig]


@pytest.fixture
def make_rig(make_settings: MakeSettings) -> MakeRig:
    def make(**env: str) -> ServiceRig:
        return ServiceRig(make_settings(**{"MSTC_PROCESSES": "2", **env}))

    return make


class Caller:
    """A REST caller on its own thread (as on the HTTP server's), blocked in execute."""

    def __init__(self, rig: ServiceRig, body: bytes, *, expect_work: bool = True) -> None:
        self.answers: list[tuple[int, str]] = []
        execute = rig.http.endpoints.execute
        self.thread = threading.Thread(
            target=lambda: self.answers.append(execute(body)), daemon=True
        )
        self.thread.start()
        if expect_work:
            assert rig.broker.wait_for_work(5), "the caller handed nothing to the connection"

    def answer(self) -> tuple[int, str]:
        self.thread.join(5)
        assert not self.thread.is_alive(), "the caller still waits"
        [answer] = self.answers
        return answer


def succeeded(name: str) -> Outcome:
    return Outcome(status=Status.SUCCEEDED, job_name=name, namespace="mstc-dev", exit_code=0)


def test_a_rest_request_goes_through_the_work_queue_and_is_answered_from_its_reply(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="2")
    body = make_body()
    caller = Caller(rig, body)
    rig.settle()

    [(_, queue, correlation_id)] = rig.events("call")
    assert queue == rig.settings.work_queue
    [start] = rig.pool.starts()
    # Its identity comes from the fresh correlation id, the connection's queue (where its
    # reply goes) and the body, as any client's request's does.
    assert start.request_id == request_identity(correlation_id, REPLY_QUEUE, body)
    assert (start.route.reply_to, start.route.correlation_id) == (REPLY_QUEUE, correlation_id)
    assert rig.events("ack") == []  # acked, as any request, only once its Job exists
    name = rig.pool.accept(start)
    rig.settle()
    assert rig.events("ack") == [("ack", 1)]

    rig.pool.finish(start, succeeded(name))
    rig.settle()

    assert caller.answer() == (200, f"Job {name} complete.")
    assert rig.events("publish") == [("publish", REPLY_QUEUE, correlation_id)]
    assert rig.pool.sent[-1] == (rig.pool.worker_of(start), ReleaseJob(name, mark_final_event=True))


def test_a_rest_request_waits_its_turn_at_the_cap(make_rig: MakeRig, make_body: MakeBody) -> None:
    rig = make_rig(MSTC_CONCURRENCY="1")
    rig.request(make_body(), reply_to=CLIENT, correlation_id="amqp-1")
    [first] = rig.pool.starts()
    first_name = rig.pool.accept(first)
    rig.settle()

    caller = Caller(rig, make_body(jobName="rest"))
    rig.settle()
    assert len(rig.pool.starts()) == 1  # at the cap: the REST request waits its turn, held
    [(_, _, rest_id)] = rig.events("call")
    assert [d.correlation_id for d, _ in rig.broker.unacked.values()] == [rest_id]

    rig.pool.finish(first, succeeded(first_name))
    rig.pool.end(first)
    rig.settle()
    [_, second] = rig.pool.starts()
    name = rig.pool.accept(second)
    rig.pool.finish(second, succeeded(name))
    rig.settle()

    assert caller.answer() == (200, f"Job {name} complete.")


def test_rest_callers_over_the_bound_are_turned_away_with_503(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="2", MSTC_HTTP_MAX_WAITING="1")
    waiting = Caller(rig, make_body())

    turned_away = Caller(rig, make_body(jobName="second"), expect_work=False)
    status, text = turned_away.answer()

    assert status == 503
    assert "MSTC_HTTP_MAX_WAITING" in text
    rig.settle()
    assert len(rig.events("call")) == 1  # the second never reached the queue
    rig.broker.close()  # lets the first caller go
    assert waiting.answer()[0] == 503


def test_a_rest_request_rejected_on_sight_is_400_and_never_queued(make_rig: MakeRig) -> None:
    rig = make_rig(MSTC_CONCURRENCY="2")

    status, text = rig.http.endpoints.execute(b'{"jobName": "no-image"}')

    assert status == 400
    assert text.startswith("Invalid request")
    assert rig.broker.wait_for_work(0) is False
    assert rig.broker.queue == collections.deque()
    assert rig.requests_done("rejected") == 1


def test_a_failed_start_answers_500_with_the_java_text(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="2")
    caller = Caller(rig, make_body())
    rig.settle()
    [start] = rig.pool.starts()
    outcome = Outcome(status=Status.ERROR, error="quota exceeded", error_type="KubeRejected")
    rig.pool.fail_start(start, outcome, transient=False)
    rig.settle()

    status, text = caller.answer()
    assert status == 500
    assert text.startswith("KubeRejected: ")


def test_a_lost_connection_tells_the_waiting_caller_at_once(
    make_rig: MakeRig, make_body: MakeBody
) -> None:
    rig = make_rig(MSTC_CONCURRENCY="2")
    caller = Caller(rig, make_body())
    rig.settle()

    rig.broker.close()

    status, text = caller.answer()
    assert status == 503
    assert text.startswith("BrokerUnavailable: ")
    assert rig.settings.results_queue in text
