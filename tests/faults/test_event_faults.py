"""The final event is owed like the reply: exactly once through a broker restart.

The request's final events are counted on a durable queue bound to the events exchange
(`EventTap`), which outlives the restart and counts exactly. (Exactly once through a worker
killed or terminated at each step of a request's life is counted in the rows of
test_worker_faults, which stop the worker at those steps anyway.)
"""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client as k8s

import localstack
from tests.faults.report import FaultRecord
from tests.support.events import EventTap
from tests.support.kube import watch_until
from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import pod_fate, request, wait_released

pytestmark = pytest.mark.stack


@pytest.fixture
def name() -> str:
    return f"once-{uuid.uuid4().hex[:8]}"


def _active(api_client: k8s.ApiClient, namespace: str) -> None:
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _k, job: bool(job.status and job.status.active),
        namespace=namespace,
    )


def test_the_final_event_arrives_once_after_a_rabbitmq_restart_while_its_job_runs(
    local_cfg: localstack.Config, make_worker: MakeWorker, durable_client: AmqpClient,
    tap: EventTap, bucket: str, work_queue: str, api_client: k8s.ApiClient, namespace: str,
    name: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "RabbitMQ restarted while a Job runs: its final event"
    fault.expected = "exactly one final event (succeeded), kept across the restart"
    make_worker()
    cid = durable_client.send(request(bucket, jobName=name, **pod_fate(run_for="5s")),
                              queue=work_queue)  # fmt: skip
    _active(api_client, namespace)
    stopped = time.monotonic()
    localstack.stop(local_cfg, "rabbitmq")
    localstack.up_rabbitmq(local_cfg)
    down = time.monotonic() - stopped
    durable_client.reconnect()
    tap.reconnect()
    reply = durable_client.wait(cid, timeout=180)
    wait_released(api_client, namespace, reply["jobName"])
    finals = tap.finals_of(name)
    assert [f["event"] for f in finals] == ["succeeded"], finals
    fault.saw(f"broker down {down:.0f} s; {len(finals)} final event ({finals[0]['event']})")
