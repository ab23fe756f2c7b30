"""The service's handling of control messages: answered then acked, never requeued in a loop.

Pure rules of `ControlDesk`, driven with the in-memory broker and pool of tests.support.fakes;
the real broker's side is tested against RabbitMQ in tests/worker/test_cancel.py.
"""

from __future__ import annotations

import json
import threading

from mstc_worker.control import ANSWER_TYPE, CancelAnswer, CancelCommand
from mstc_worker.control_desk import ControlDesk
from mstc_worker.messages import CancelAnswered, CancelJob
from tests.support.fakes import FakeBroker, FakePool

CANCEL = b'{"format": 1, "action": "cancel", "jobName": "job-1", "by": "me"}'


def _desk() -> tuple[ControlDesk, FakeBroker, FakePool]:
    broker, pool = FakeBroker(prefetch=10), FakePool(2)
    desk = ControlDesk(broker=broker, pool=pool)
    broker.attach(threading.Event(), desk.on_delivery)
    return desk, broker, pool


def _answers(broker: FakeBroker) -> list[dict[str, object]]:
    published = broker.published_to("canceller")
    assert all(p.message_type == ANSWER_TYPE for p in published)
    assert all(p.correlation_id == "c1" for p in published)
    return [json.loads(p.body) for p in published]


def test_a_bad_control_message_is_answered_invalid_and_acked_at_once() -> None:
    _, broker, pool = _desk()
    broker.enqueue(b"{not json", reply_to="canceller", correlation_id="c1")
    assert broker.dispatch() == 1
    assert [a["status"] for a in _answers(broker)] == ["invalid"]
    assert broker.unacked == {}
    assert not broker.queue  # not requeued
    assert pool.sent == []


def test_a_cancel_goes_to_a_process_and_is_acked_only_once_answered() -> None:
    desk, broker, pool = _desk()
    broker.enqueue(CANCEL, reply_to="canceller", correlation_id="c1")
    broker.dispatch()
    [(_index, sent)] = pool.sent
    assert isinstance(sent, CancelJob)
    assert sent.command == CancelCommand("job-1", by="me")
    assert len(broker.unacked) == 1  # a replica dying now leaves it to another
    answer = CancelAnswer(status="cancelling", message="Cancelling Job job-1.", job_name="job-1")
    desk.answered(CancelAnswered(0, sent.key, answer))
    assert [a["status"] for a in _answers(broker)] == ["cancelling"]
    assert broker.unacked == {}


def test_a_cancel_whose_process_died_is_answered_error_not_retried() -> None:
    desk, broker, pool = _desk()
    broker.enqueue(CANCEL, reply_to="canceller", correlation_id="c1")
    broker.dispatch()
    [(index, _sent)] = pool.sent
    desk.worker_died(index, 1)
    [answer] = _answers(broker)
    assert answer["status"] == "error"
    assert "send the cancel again" in str(answer["message"])
    assert broker.unacked == {}


def test_an_answer_for_a_lost_channel_is_not_sent_the_redelivery_is_answered() -> None:
    desk, broker, pool = _desk()
    broker.enqueue(CANCEL, reply_to="canceller", correlation_id="c1")
    broker.dispatch()
    [(_index, sent)] = pool.sent
    assert isinstance(sent, CancelJob)
    broker.close()  # the message goes back to the queue
    desk.answered(CancelAnswered(0, sent.key, CancelAnswer(status="cancelling", message="x")))
    assert _answers(broker) == []
    assert len(broker.queue) == 1
