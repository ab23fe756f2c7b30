"""Issue 19's stalled flags against the real stack: the installed `mstc-flow` (its scanning
thread, its API) beside a real worker on the KWOK cluster, and the real `mstc` command.

A Job whose pod the stack's waiting-reason annotation keeps waiting is flagged `pending` once
the (test-short) setting has passed, `mstc jobs ls --flagged` lists it, and the flag clears
when the Job is cancelled. A worker stopped with SIGKILL is flagged `quiet-replica` after
three of its (test-short) heartbeat intervals and cleared when it beats again; one stopped
with SIGTERM (it says `stopping`) is not. Flags are awaited by polling the API (it cannot be
awaited otherwise), never by sleeping. Every test worker runs on this host, so they all are
one replica (the host name): the replica test runs one worker at a time.
"""

from __future__ import annotations

import json
import signal
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
    start_with_worker,
)
from tests.flow.test_engine_stack import name
from tests.flow.test_flow_done_when_ops import write_catalog
from tests.support.kube import WAITING_REASON
from tests.support.stack import StackInfo
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

REPLICA = socket.gethostname()  # every test worker's replica name
FAST_SCAN = {"MSTC_FLOW_STALL_SCAN_SECONDS": "0.2"}
PENDING_SECONDS = 2.0
BEAT_SECONDS = 1  # the test workers' heartbeat interval: quiet after 3 s


def flags(flow: RealFlow) -> list[dict[str, Any]]:
    status, answer = flow.get("/api/v1/flags", token=READ_TOKEN)
    assert status == 200, answer
    items: list[dict[str, Any]] = answer["items"]
    return items


def flagged(kind: str, subject: str) -> Any:
    return lambda answer: any(
        f["kind"] == kind and f["subject"] == subject for f in answer["items"]
    )


def unflagged(subject: str) -> Any:
    return lambda answer: all(f["subject"] != subject for f in answer["items"])


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_job_held_pending_is_flagged_listed_by_mstc_and_cleared_when_cancelled(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:  # fmt: skip
    entry = name()
    held = {WAITING_REASON: "ContainerCreating"}  # not a fail-fast reason: the pod just waits
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(entry, f"lab/{entry}", held)])
    flow = start_with_worker(
        make_worker, make_real_flow, {}, MSTC_FLOW_CATALOG=catalog,
        MSTC_FLOW_PENDING_FLAG_SECONDS=str(PENDING_SECONDS), **FAST_SCAN,
    )  # fmt: skip
    assert flow.mstc("catalog", "fire", entry).returncode == 0
    job = flow.poll(f"/api/v1/jobs?name={entry}", lambda page: page["items"])["items"][0]
    key = job["requestId"]

    answer = flow.poll("/api/v1/flags", flagged("pending", key), timeout=30)
    (flag,) = [f for f in answer["items"] if f["subject"] == key]
    assert when(flag["since"]) == when(job["acceptedAt"])
    assert (when(flag["raisedAt"]) - when(flag["since"])).total_seconds() >= PENDING_SECONDS
    assert flag["clearedAt"] is None
    shown = flow.get(f"/api/v1/jobs/{key}", token=READ_TOKEN)[1]
    assert (shown["state"], [f["kind"] for f in shown["flags"]]) == ("accepted", ["pending"])

    listed = flow.mstc("jobs", "ls", "--flagged", "--json", token=READ_TOKEN)
    assert listed.returncode == 0, listed.stderr
    assert [(j["requestId"], [f["kind"] for f in j["flags"]])
            for j in json.loads(listed.stdout)["items"]] == [(key, ["pending"])]  # fmt: skip
    table = flow.mstc("jobs", "ls", "--flagged", token=READ_TOKEN).stdout.splitlines()
    assert (table[0].split()[-1], table[1].split()[-1], len(table)) == ("FLAGS", "pending", 2)

    assert flow.mstc("jobs", "cancel", key).returncode == 0
    flow.poll("/api/v1/flags", unflagged(key), timeout=30)
    assert flow.get(f"/api/v1/jobs/{key}", token=READ_TOKEN)[1]["state"] == "cancelled"
    again = flow.mstc("jobs", "ls", "--flagged", "--json", token=READ_TOKEN)
    assert json.loads(again.stdout)["items"] == []


def publish_heartbeat(stack: StackInfo, replica: str) -> None:
    """One heartbeat of a replica that exists only in this test, stamped now."""
    body = {"format": 1, "event": "heartbeat", "replica": replica, "version": "test",
            "inFlight": 0, "capacity": 1, "intervalSeconds": BEAT_SECONDS,
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}  # fmt: skip
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        conn.channel().basic_publish("amq.topic", f"mstc.worker.heartbeat.{replica}",
                                     json.dumps(body).encode())  # fmt: skip
    finally:
        conn.close()


def test_a_killed_worker_is_flagged_quiet_until_it_beats_again_and_a_stopped_one_is_not(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
) -> None:  # fmt: skip
    beats = {"MSTC_REPLICA_HEARTBEAT_SECONDS": str(BEAT_SECONDS)}
    worker = make_worker(start=False, **beats)
    worker.start(wait_ready=False)
    flow = make_real_flow(**FAST_SCAN)
    worker.wait_ready()
    flow.poll("/api/v1/replicas", lambda a: any(r["replica"] == REPLICA for r in a["items"]))

    worker.signal(signal.SIGKILL)
    worker.wait()
    answer = flow.poll("/api/v1/flags", flagged("quiet-replica", REPLICA), timeout=30)
    (flag,) = [f for f in answer["items"] if f["subject"] == REPLICA]
    assert (when(flag["raisedAt"]) - when(flag["since"])).total_seconds() >= 3 * BEAT_SECONDS

    back = make_worker(**beats)  # the same host: the same replica, beating again
    flow.poll("/api/v1/flags", unflagged(REPLICA), timeout=30)

    back.signal(signal.SIGTERM)
    assert back.wait() == 0
    # The witness beats once after the stopped worker's last word, so once the witness is
    # flagged quiet, a scan has judged the stopped worker three intervals after its last
    # heartbeat too: had `stopping` been ignored, that same scan flagged it.
    witness = f"witness-{uuid.uuid4().hex[:8]}"
    publish_heartbeat(stack, witness)
    answer = flow.poll("/api/v1/flags", flagged("quiet-replica", witness), timeout=30)
    assert [f["subject"] for f in answer["items"]] == [witness]
    stopped = [r for r in flow.get("/api/v1/replicas", token=READ_TOKEN)[1]["items"]
               if r["replica"] == REPLICA]  # fmt: skip
    assert stopped[0]["stopping"] is True
