"""A request's identity: its id, where its reply goes and its body, never the id alone.

The rule at the bottom (`manifest.request_identity`) and what the service makes of it, on
the in-memory broker and pool: two clients that number their requests alike get a Job
each, and a message with no id keeps its Job across a redelivery. The same is checked end
to end on the real stack in tests/faults/test_request_identity.py.
"""

from __future__ import annotations

import pytest

from mstc_worker.errors import RequestRejected
from mstc_worker.manifest import job_name_for, request_identity
from mstc_worker.protocol import parse_request
from mstc_worker.settings import Settings
from tests.support.fakes import job_name
from tests.support.service_rig import ServiceRig
from tests.unit.conftest import MakeBody, MakeSettings

BODY = b'{"image": "mstc/tool:1", "jobName": "j", "inputBucket": "in"}'


def test_the_identity_is_64_hex_digits_and_the_same_for_the_same_message() -> None:
    first = request_identity("1", "amq.gen-a", BODY)
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert request_identity("1", "amq.gen-a", BODY) == first


def test_the_same_id_on_another_route_or_with_another_body_is_another_request() -> None:
    base = request_identity("1", "amq.gen-a", BODY)
    assert request_identity("1", "amq.gen-b", BODY) != base
    assert request_identity("1", "amq.gen-a", BODY + b" ") != base
    assert request_identity("2", "amq.gen-a", BODY) != base
    # The parts are kept apart: moving characters from one to the other changes it.
    assert request_identity("1a", "", BODY) != request_identity("1", "a", BODY)


def test_a_message_without_id_is_its_route_and_body() -> None:
    assert request_identity(None, "amq.gen-a", BODY) == request_identity(None, "amq.gen-a", BODY)
    assert request_identity(None, "amq.gen-a", BODY) != request_identity(None, "amq.gen-b", BODY)
    assert request_identity(None, "", BODY) != request_identity("", "", BODY)


def test_the_job_name_keeps_the_java_shape() -> None:
    name = job_name_for("My_Job", request_identity("1", "amq.gen-a", BODY))
    assert name.startswith("my-job-")
    assert len(name) == len("my-job-") + 36


def test_two_clients_numbering_from_1_get_a_job_each(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    rig = ServiceRig(make_settings(MSTC_PROCESSES="2", MSTC_CONCURRENCY="4"))
    body = make_body(jobName="same")
    rig.request(body, reply_to="amq.gen-alice", correlation_id="1")
    rig.request(body, reply_to="amq.gen-bob", correlation_id="1")

    alice, bob = rig.pool.starts()
    assert job_name(alice) != job_name(bob)
    assert (alice.route.reply_to, bob.route.reply_to) == ("amq.gen-alice", "amq.gen-bob")
    assert alice.route.correlation_id == bob.route.correlation_id == "1"  # as sent


def test_a_message_without_ids_keeps_its_job_across_a_redelivery(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    rig = ServiceRig(make_settings(MSTC_PROCESSES="2", MSTC_CONCURRENCY="2"))
    rig.request(make_body(), reply_to="amq.gen-client")
    [first] = rig.pool.starts()

    rig.pool.die(rig.pool.worker_of(first))  # the request is requeued and comes back
    rig.settle()

    _, again = rig.pool.starts()
    assert again.route.correlation_id is None
    assert job_name(again) == job_name(first)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"inputBucket": "mstc-worker-replies"}, "inputBucket"),
        ({"outputBucket": "mstc-worker-replies"}, "outputBucket"),
        ({"inputBucketUrl": "http://minio:9000/mstc-worker-replies"}, "inputBucket"),
    ],
)
def test_a_request_may_not_name_the_bucket_of_the_reply_records(
    settings: Settings, make_body: MakeBody, fields: dict[str, str], field: str
) -> None:
    body = make_body(without=("inputBucket",) if "inputBucketUrl" in fields else (), **fields)
    with pytest.raises(RequestRejected, match="MSTC_REPLY_RECORDS_BUCKET") as caught:
        parse_request(body, settings=settings)
    assert caught.value.field == field
