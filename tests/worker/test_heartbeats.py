"""Replica heartbeats on the real stack: a running worker's heartbeats and its stopping message.

The test listens on amq.topic as any subscriber would (its own server-named queue, bound to
`mstc.worker.#`), with a heartbeat every second (MSTC_REPLICA_HEARTBEAT_SECONDS=1).
"""

from __future__ import annotations

import itertools
import signal
import socket
import statistics
import time
from collections.abc import Callable, Iterator

import pytest

from mstc_worker import __version__
from tests.support.stack import StackInfo
from tests.support.topics import Heard, TopicListener
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.tcp_proxy import TcpProxy
from tests.worker.test_service import pod_fate, request

pytestmark = pytest.mark.stack

REPLICA = socket.gethostname()  # every test worker runs on this host


@pytest.fixture
def beats(stack: StackInfo) -> Iterator[TopicListener]:
    listener = TopicListener(stack, "mstc.worker.#")
    yield listener
    listener.close()


def _heartbeats(heard: list[Heard]) -> list[Heard]:
    return [h for h in heard if h.body.get("event") == "heartbeat"]


def test_a_running_worker_beats_every_interval_with_its_counts(
    make_worker: MakeWorker, beats: TopicListener, client: AmqpClient, bucket: str,
    work_queue: str,
) -> None:  # fmt: skip
    make_worker(MSTC_REPLICA_HEARTBEAT_SECONDS="1", MSTC_CONCURRENCY="3")
    [first] = beats.until(lambda h: h.body["event"] == "heartbeat")
    assert first.routing_key == f"mstc.worker.heartbeat.{REPLICA.replace('.', '_')}"
    assert first.message_type == "mstc.heartbeat"
    body = first.body
    assert (body["format"], body["replica"], body["version"]) == (1, REPLICA, __version__)
    assert (body["inFlight"], body["capacity"], body["intervalSeconds"]) == (0, 3, 1)

    cid = client.send(request(bucket, **pod_fate(run_for="5s")), queue=work_queue)
    busy = beats.until(lambda h: h.body["inFlight"] == 1)  # while its Job runs
    assert client.wait(cid)["status"] == "succeeded"
    idle = beats.until(lambda h: h.body["inFlight"] == 0)  # once it is answered

    heard = _heartbeats([first, *busy, *idle])
    assert {h.body["startedAt"] for h in heard} == {body["startedAt"]}
    assert [h.body["at"] for h in heard] == sorted(h.body["at"] for h in heard)
    gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(heard)]
    assert len(gaps) >= 5, gaps  # a 5 s Job spans several heartbeats
    assert 0.7 <= statistics.median(gaps) <= 1.5, gaps
    assert max(gaps) < 3, gaps  # none missed (load on a shared machine allows some jitter)


def test_sigterm_sends_one_stopping_message_and_no_heartbeat_after_it(
    make_worker: MakeWorker, beats: TopicListener, client: AmqpClient, bucket: str,
    work_queue: str,
) -> None:  # fmt: skip
    worker = make_worker(MSTC_REPLICA_HEARTBEAT_SECONDS="1", MSTC_SHUTDOWN_GRACE_SECONDS="30")
    cid = client.send(request(bucket, **pod_fate(run_for="4s")), queue=work_queue)
    beats.until(lambda h: h.body.get("inFlight") == 1)

    worker.signal(signal.SIGTERM)  # it drains for a few seconds: heartbeats could still come
    assert client.wait(cid)["status"] == "succeeded"
    assert worker.wait(timeout=60) == 0
    after = beats.barrier()

    events = [h.body["event"] for h in after]
    assert events.count("stopping") == 1, events
    assert events[-1] == "stopping", events
    [stopping] = [h for h in after if h.body["event"] == "stopping"]
    assert stopping.routing_key == f"mstc.worker.stopping.{REPLICA.replace('.', '_')}"
    assert stopping.body["inFlight"] == 1  # said as draining began, its Job still running
    assert stopping.message_type == "mstc.heartbeat"


def test_a_broker_outage_skips_heartbeats_and_the_worker_serves_on(
    stack: StackInfo, make_worker: MakeWorker, beats: TopicListener, client: AmqpClient,
    bucket: str, work_queue: str,
) -> None:  # fmt: skip
    host, port = stack.amqp_url.rsplit("@", 1)[1].split("/")[0].rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    try:
        proxied = stack.amqp_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        worker = make_worker(MSTC_REPLICA_HEARTBEAT_SECONDS="1", MSTC_AMQP_URL=proxied)
        beats.until(lambda h: h.body["event"] == "heartbeat")
        proxy.block()
        _until(lambda: worker.get("/readyz")[0] != 200)  # it knows the broker is gone
        cut = time.monotonic()
        before = beats.barrier()
        time.sleep(4)  # an outage of four intervals: time passing is the point
        proxy.unblock()
        _until(lambda: worker.get("/readyz")[0] == 200)
        back = time.monotonic()
        beats.until(lambda h: h.body["event"] == "heartbeat")
        time.sleep(3)  # three intervals after it: would hold a burst of saved-up heartbeats
        heard = _heartbeats(before + beats.barrier())
        during = [h for h in heard if cut + 0.5 < h.arrived < back]
        assert during == []
        resumed = [h for h in heard if h.arrived >= back]
        assert 2 <= len(resumed) <= 6, [h.arrived - back for h in resumed]  # ~one a second
        gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(resumed)]
        assert min(gaps) > 0.5, gaps  # none queued up during the outage and sent in a burst

        cid = client.send(request(bucket, **pod_fate(run_for="1s")), queue=work_queue)
        assert client.wait(cid)["status"] == "succeeded"
    finally:
        proxy.close()


def _until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.1)  # polling the readiness probe, as Kubernetes does
