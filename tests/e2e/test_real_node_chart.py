"""The user's path on the real node: the umbrella chart installed into mstc-dev, then jobs run.

Selected with ``-m real_node`` and run only on a stack started with ``MSTC_STACK_REAL_NODE=1``
(``make test-real-node``); skipped otherwise, saying so. Once per module, ``helm install`` of
charts/mstc-cloud-worker (tests/support/realnode_chart.py): the worker, RabbitMQ (Debian's
rabbitmq-server, importing the chart's definitions file) and MinIO run as real containers on
the real node, and the worker makes its Jobs there with the chart's ServiceAccount. Checked:
the three pods are Ready and the broker holds the chart's topology; ``mstc run`` of the example
job on examples/demo-input brings back the files the job sorted and its log ending in SUCCESS;
a Java-era client round-trips; a container that exits 3 is ``failed`` with exit code 3; a Job
past its timeOut is ``timeout``; an image the node lacks fails fast with an image-pull reason;
the worker's pod deleted mid-job, the pod that replaces it replies, once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from kubernetes import client as k8s
from minio import Minio
from paho.mqtt.enums import CallbackAPIVersion

from tests.deploy.conftest import ROOT
from tests.support.kube import wait_gone, watch_until
from tests.support.mqtt_login import connack
from tests.support.realnode import why_not
from tests.support.realnode_chart import (
    NAMESPACE,
    RELEASE,
    Installed,
    install,
    route_namespace,
    uninstall,
    unroute_namespace,
)
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient

pytestmark = [
    pytest.mark.real_node,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
]


@pytest.fixture(scope="module")
def installed(stack: StackInfo, api_client: k8s.ApiClient) -> Iterator[Installed]:
    if reason := why_not(stack):
        pytest.skip(reason)
    core = k8s.CoreV1Api(api_client)
    created = route_namespace(core)
    try:
        # A short drain, so that a deleted worker pod hands its Jobs over soon.
        yield install(stack, core, "--set", "worker.shutdownGraceSeconds=5")
    finally:
        uninstall(stack)
        unroute_namespace(core, created=created)


@pytest.fixture
def client(installed: Installed) -> Iterator[AmqpClient]:
    """A client of the release's broker: an exclusive reply queue, as the Java project's."""
    amqp = AmqpClient(StackInfo(env={"MSTC_AMQP_URL": installed.amqp_url()}, kind="local"))
    yield amqp
    amqp.close()


def _request(installed: Installed, command: list[str], **fields: Any) -> dict[str, Any]:
    """A request running `command` in the node's base image (no inputs needed)."""
    return {
        "image": installed.stack.env["MSTC_REAL_NODE_BASE_IMAGE"],
        "jobName": "real",
        "inputBucket": f"in-{uuid.uuid4().hex[:10]}",
        "command": command,
        "timeOut": 5,
        **fields,
    }


def test_the_chart_runs_worker_rabbitmq_and_minio_as_ready_pods_on_the_real_node(
    installed: Installed,
) -> None:
    for name in ("mstc-cloud-worker", "mstc-work-queue", "minio"):
        (pod,) = installed.pods(name)
        assert pod.spec.node_name == installed.stack.env["MSTC_REAL_NODE"], name
        ready = [c.status for c in pod.status.conditions if c.type == "Ready"]
        assert ready == ["True"], (name, pod.status.conditions)
    # RabbitMQ imported the chart's definitions: their user logs in, and the work queue is
    # there, re-declared as Java-era clients do (durable, no arguments).
    conn = pika.BlockingConnection(pika.URLParameters(installed.amqp_url()))
    try:
        channel = conn.channel()
        channel.queue_declare("mstc.queue.work", durable=True)
        channel.queue_declare("mstc.queue.dead", durable=True, passive=True)
        channel.exchange_declare("mstc.exchange", "direct", passive=True)
    finally:
        conn.close()
    (rabbit,) = installed.pods("mstc-work-queue")
    log = installed.core.read_namespaced_pod_log(rabbit.metadata.name, NAMESPACE)
    assert "Applying definitions from file at '/etc/rabbitmq/definitions.json'" in log


def test_the_charts_rabbitmq_takes_mqtt_from_its_user_onto_amq_topic_and_refuses_anonymous(
    installed: Installed,
) -> None:
    """MQTT publishers (the MQTT job listener's users) reach mstc-flow's triggers through the
    chart's RabbitMQ: its user's MQTT publish arrives on amq.topic with `/` as `.`; a client
    without a login is refused (the plugin would otherwise let anyone in)."""
    env = installed.client_env()
    host = env["WORK_QUEUE_HOST"]
    conn = pika.BlockingConnection(pika.URLParameters(installed.amqp_url()))
    try:
        channel = conn.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, "amq.topic", "experiments.init-job")
        user = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chart-mqtt-user")
        user.username_pw_set(env["WORK_QUEUE_USER"], env["WORK_QUEUE_PASS"])
        user.connect(host, 1883)
        user.loop_start()
        user.publish("experiments/init-job", b"go", qos=1).wait_for_publish(30)
        user.loop_stop()
        user.disconnect()
        for method, _props, body in channel.consume(queue, inactivity_timeout=30):
            assert method is not None, "the MQTT publish never reached amq.topic"
            assert body == b"go"
            break
    finally:
        conn.close()
    assert connack(host, 1883, None).is_failure


def _mstc() -> str:
    """The `mstc` command of this environment (its scripts dir is beside the interpreter)."""
    beside = Path(sys.executable).parent / "mstc"
    found = str(beside) if beside.exists() else shutil.which("mstc")
    assert found, "the mstc command is not installed (uv sync)"
    return found


def test_mstc_run_of_the_example_job_brings_back_what_the_job_computed(
    installed: Installed, tmp_path: Path
) -> None:
    """The way users run it: the example job's image on examples/demo-input, outputs local,
    with the key the chart made for clients (NOTES), not MinIO's root key."""
    # Only the release's settings: the stack's own MSTC_AMQP_URL/MSTC_S3_ENDPOINT would win.
    env = {k: v for k, v in os.environ.items() if k not in ("MSTC_AMQP_URL", "MSTC_S3_ENDPOINT")}
    client_env = installed.client_env()
    del client_env["MINIO_ROOT_USER"], client_env["MINIO_ROOT_PASSWORD"]
    client_secret = f"{RELEASE}-minio-client"
    client_env["MSTC_S3_ACCESS_KEY"] = installed.secret(client_secret, "accessKey")
    client_env["MSTC_S3_SECRET_KEY"] = installed.secret(client_secret, "secretKey")
    out = tmp_path / "out"
    done = subprocess.run(
        [_mstc(), "run", "--image", installed.stack.env["MSTC_REAL_NODE_JOB_IMAGE"],
         "--job-name", "demo", "--input", str(ROOT / "examples" / "demo-input"),
         "--output-dir", str(out), "--timeout", "5", "--json"],
        env={**env, **client_env},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded", result
    assert result["exitCode"] == 0
    # What job.py computed in the real container: each input's lines, sorted.
    assert (out / "fruit.txt.sorted").read_bytes() == b"apple\nfig\npear\n"
    assert (out / "numbers.txt.sorted").read_bytes() == b"1\n2\n3\n"
    (log,) = out.glob("*.log")
    lines = log.read_text().rstrip().splitlines()
    assert lines[-1] == "SUCCESS"
    assert any(line.startswith("sorted ") and "fruit.txt (3 lines)" in line for line in lines)


def test_a_java_era_client_round_trips(installed: Installed, client: AmqpClient) -> None:
    """As the Java project's test client: durable re-declaration of the work queue, the
    exchange, an exclusive reply queue, the bucket URL form, the Job's name from `result`."""
    env = installed.client_env()
    s3 = Minio(
        f"{env['MINIO_SERVICE_HOST']}:9000",
        access_key=env["MINIO_ROOT_USER"],
        secret_key=env["MINIO_ROOT_PASSWORD"],
        secure=False,
    )
    bucket = f"java-{uuid.uuid4().hex[:10]}"
    s3.make_bucket(bucket)
    s3.put_object(bucket, "run-1/words.txt", io.BytesIO(b"b\nc\na\n"), 6)
    client.channel.queue_declare("mstc.queue.work", durable=True)  # no arguments, as they do
    body = {
        "image": installed.stack.env["MSTC_REAL_NODE_JOB_IMAGE"],
        "jobName": "java-era",
        "inputBucketUrl": f"http://{installed.minio}:9000/{bucket}",
        "prefix": "run-1",
    }
    reply = client.wait(client.send(body, exchange="mstc.exchange"), timeout=300)
    job_name = reply["result"].split(" ")[1]
    assert reply["result"] == f"Job {job_name} complete."
    assert job_name.startswith("java-era-")
    assert read_object(s3, bucket, "run-1/words.txt.sorted") == b"a\nb\nc\n"
    log = read_object(s3, bucket, f"run-1-{job_name}.log").decode()
    assert log.rstrip().splitlines()[-1] == "SUCCESS"
    assert (reply["status"], reply["namespace"]) == ("succeeded", NAMESPACE)


def test_a_container_that_exits_3_is_failed_with_exit_code_3(
    installed: Installed, client: AmqpClient
) -> None:
    cid = client.send(_request(installed, ["sh", "-c", "echo giving up; exit 3"]))
    reply = client.wait(cid, timeout=180)
    assert reply["status"] == "failed", reply
    assert reply["exitCode"] == 3
    assert reply["reason"] == "Error"  # the container's reason, from the real runtime
    assert reply["result"] == f"Job {reply['jobName']} complete."


def test_a_job_past_its_timeout_is_timeout(installed: Installed, client: AmqpClient) -> None:
    cid = client.send(_request(installed, ["sleep", "600"], timeOut=1))
    reply = client.wait(cid, timeout=240)
    assert reply["status"] == "timeout", reply
    assert reply["reason"] == "DeadlineExceeded"


def test_an_image_the_node_lacks_fails_fast_with_an_image_pull_reason(
    installed: Installed, client: AmqpClient, api_client: k8s.ApiClient
) -> None:
    started = time.monotonic()
    request = _request(installed, ["true"], image="mstc.local/not-built-here:1")
    reply = client.wait(client.send(request), timeout=180)
    elapsed = time.monotonic() - started
    assert reply["status"] == "failed", reply
    assert reply["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert elapsed < 120, f"{elapsed:.0f} s: not fast, for a request of 5 minutes"
    wait_gone(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        namespace=NAMESPACE,
        field_selector=f"metadata.name={reply['jobName']}",
    )


def test_the_worker_pod_deleted_mid_job_its_successor_replies_once(
    installed: Installed, client: AmqpClient
) -> None:
    core = installed.core
    job_name = f"handover-{uuid.uuid4().hex[:6]}"
    cid = client.send(_request(installed, ["sleep", "25"], jobName=job_name))
    watch_until(
        core.list_namespaced_pod,
        lambda _t, pod: pod.status.phase == "Running",
        timeout=120,
        namespace=NAMESPACE,
        label_selector=f"app.kubernetes.io/name={job_name}",
    )
    (old,) = installed.pods("mstc-cloud-worker")
    core.delete_namespaced_pod(old.metadata.name, NAMESPACE)  # SIGTERM, then the drain
    wait_gone(
        core.list_namespaced_pod,
        namespace=NAMESPACE,
        field_selector=f"metadata.name={old.metadata.name}",
        timeout=120,
    )
    reply = client.wait(cid, timeout=240)
    assert reply["status"] == "succeeded", reply
    client.barrier()  # every reply sent so far has arrived: the old pod is gone
    assert len(client.replies[cid]) == 1
    (new,) = installed.pods("mstc-cloud-worker")
    assert new.metadata.name != old.metadata.name
    # The reply came from the new pod (the old one was gone before the Job ended).
    log = core.read_namespaced_pod_log(new.metadata.name, NAMESPACE)
    assert f"job {reply['jobName']} replied: succeeded" in log
