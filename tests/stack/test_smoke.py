"""Each part of the local stack is real and wired: one behaviour per test, through its protocol."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from kubernetes import client as k8s
from minio import Minio

from tests.support.kube import (
    job_condition,
    job_pods,
    simulated_job,
    wait_gone,
    wait_job,
    watch_until,
)
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

CHARTS = Path(__file__).parent / "charts"


# --- RabbitMQ -------------------------------------------------------------------------------


def test_rabbitmq_publish_with_confirm_and_consume(stack: StackInfo) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        queue = f"smoke-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(queue, durable=True)
        body = uuid.uuid4().bytes
        # With confirms on, basic_publish returns only once the broker has taken the message,
        # and raises if it did not (mandatory: also if no queue took it).
        ch.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=2, correlation_id="c-1"),
            mandatory=True,
        )
        method, props, got = ch.basic_get(queue, auto_ack=False)
        assert method is not None
        assert got == body
        assert props.correlation_id == "c-1"
        ch.basic_ack(method.delivery_tag)
        ch.queue_delete(queue)
    finally:
        conn.close()


def test_rabbitmq_publish_to_missing_exchange_is_refused(stack: StackInfo) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.basic_publish(f"no-such-{uuid.uuid4().hex}", "k", b"x")
        assert err.value.reply_code == 404
    finally:
        conn.close()


def test_rabbitmq_management_plugin_answers(stack: StackInfo) -> None:
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    req = urllib.request.Request(
        f"{stack.env['MSTC_RABBITMQ_MANAGEMENT_URL']}/api/overview",
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        overview = json.load(resp)
    assert overview["rabbitmq_version"]
    listeners = {entry["protocol"] for entry in overview["listeners"]}
    assert {"amqp", "mqtt", "http"} <= listeners


def test_rabbitmq_mqtt_plugin_accepts_a_connect(stack: StackInfo) -> None:
    """An MQTT 3.1.1 CONNECT with the stack's user gets CONNACK 'accepted' (return code 0)."""
    user, password = stack.env["WORK_QUEUE_USER"].encode(), stack.env["WORK_QUEUE_PASS"].encode()

    def field(value: bytes) -> bytes:
        return struct.pack("!H", len(value)) + value

    flags = 0b1100_0010  # username, password, clean session
    variable = field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 30)
    payload = field(b"smoke-" + uuid.uuid4().hex[:8].encode()) + field(user) + field(password)
    remaining = variable + payload
    packet = bytes([0x10, len(remaining)]) + remaining
    host = stack.env["WORK_QUEUE_HOST"]
    with socket.create_connection((host, int(stack.env["MSTC_MQTT_PORT"])), timeout=10) as sock:
        sock.sendall(packet)
        connack = sock.recv(4)
    assert connack == bytes([0x20, 0x02, 0x00, 0x00])


# --- MinIO ----------------------------------------------------------------------------------


def test_minio_put_and_get_an_object(stack: StackInfo) -> None:
    user, password = stack.s3_keys
    s3 = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    data = uuid.uuid4().bytes * 1000
    s3.put_object(bucket, "dir/input.bin", io.BytesIO(data), len(data))
    resp = s3.get_object(bucket, "dir/input.bin")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    s3.remove_object(bucket, "dir/input.bin")
    s3.remove_bucket(bucket)


# --- Kubernetes with KWOK -------------------------------------------------------------------


def test_job_completes_and_watch_sees_complete(api_client: k8s.ApiClient, namespace: str) -> None:
    batch = k8s.BatchV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job())
    done = wait_job(batch, namespace, job.metadata.name, "Complete")
    assert done.status.succeeded == 1
    assert job_condition(done, "Failed") is None


def test_job_runs_for_the_annotated_time(api_client: k8s.ApiClient, namespace: str) -> None:
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job(run_for="3s"))
    wait_job(batch, namespace, job.metadata.name, "Complete")
    (pod,) = job_pods(core, namespace, job.metadata.name)
    ended = pod.status.container_statuses[0].state.terminated
    assert ended.exit_code == 0
    assert (ended.finished_at - ended.started_at).total_seconds() >= 3


def test_failed_job_shows_exit_code_on_its_pod(api_client: k8s.ApiClient, namespace: str) -> None:
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job(exit_code=3))
    failed = wait_job(batch, namespace, job.metadata.name, "Failed")
    condition = job_condition(failed, "Failed")
    assert condition is not None
    assert condition.reason == "BackoffLimitExceeded"
    (pod,) = job_pods(core, namespace, job.metadata.name)
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff"])
def test_pod_can_be_held_waiting_with_a_reason(
    api_client: k8s.ApiClient, namespace: str, reason: str
) -> None:
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job(waiting_reason=reason))

    def waiting(_type: str, pod: k8s.V1Pod) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses and statuses[0].state.waiting)

    pod = watch_until(
        core.list_namespaced_pod,
        waiting,
        namespace=namespace,
        label_selector=f"job-name={job.metadata.name}",
    )
    assert pod.status.container_statuses[0].state.waiting.reason == reason
    assert (
        job_condition(batch.read_namespaced_job(job.metadata.name, namespace), "Complete") is None
    )


def test_active_deadline_ends_a_long_job(api_client: k8s.ApiClient, namespace: str) -> None:
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    job = batch.create_namespaced_job(
        namespace, simulated_job(run_for="10m", active_deadline_seconds=3)
    )
    name = job.metadata.name
    failed = wait_job(batch, namespace, name, "Failed")
    condition = job_condition(failed, "Failed")
    assert condition is not None
    assert condition.reason == "DeadlineExceeded"
    # The Job controller deletes the pod, and KWOK finishes the deletion.
    wait_gone(core.list_namespaced_pod, namespace=namespace, label_selector=f"job-name={name}")


def test_ttl_after_finished_removes_the_job(api_client: k8s.ApiClient, namespace: str) -> None:
    batch = k8s.BatchV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job(ttl_seconds_after_finished=1))
    name = job.metadata.name
    wait_job(batch, namespace, name, "Complete")
    wait_gone(
        batch.list_namespaced_job, namespace=namespace, field_selector=f"metadata.name={name}"
    )


def test_pod_log_is_served_through_the_api_server(
    stack: StackInfo, api_client: k8s.ApiClient, namespace: str
) -> None:
    if stack.kind == "kind":
        pytest.skip("kind's API server cannot reach the KWOK log server on the host's 127.0.0.1")
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    job = batch.create_namespaced_job(namespace, simulated_job())
    wait_job(batch, namespace, job.metadata.name, "Complete")
    (pod,) = job_pods(core, namespace, job.metadata.name)
    log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
    assert "KWOK pods have no real containers" in log


# --- helm and RBAC --------------------------------------------------------------------------


def test_helm_installs_a_chart_into_mstc_dev(stack: StackInfo, api_client: k8s.ApiClient) -> None:
    release = f"smoke-{uuid.uuid4().hex[:6]}"
    chart = str(CHARTS / "minimal")
    install = stack.run(
        stack.helm,
        "install",
        release,
        chart,
        "--namespace",
        "mstc-dev",
        "--create-namespace",
        "--wait",
        "--timeout",
        "90s",
        "--set",
        "greeting=hi",
    )
    try:
        assert "STATUS: deployed" in install.stdout
        cm = k8s.CoreV1Api(api_client).read_namespaced_config_map(f"{release}-greeting", "mstc-dev")
        assert cm.data == {"greeting": "hi"}
        deploy = k8s.AppsV1Api(api_client).read_namespaced_deployment(f"{release}-app", "mstc-dev")
        assert deploy.status.ready_replicas == 1
    finally:
        stack.run(stack.helm, "uninstall", release, "--namespace", "mstc-dev", "--wait")


def test_service_account_token_is_refused_outside_its_role(
    stack: StackInfo, api_client: k8s.ApiClient, namespace: str
) -> None:
    core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="runner"))
    )
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="jobs"),
            rules=[
                k8s.V1PolicyRule(api_groups=["batch"], resources=["jobs"], verbs=["get", "list"])
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="runner-jobs"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="jobs"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="runner", namespace=namespace)],
        ),
    )
    token = core.create_namespaced_service_account_token(
        "runner",
        namespace,
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    ).status.token

    restricted = k8s.Configuration()
    restricted.host = api_client.configuration.host
    restricted.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    restricted.api_key = {"authorization": f"Bearer {token}"}
    as_runner = k8s.ApiClient(restricted)
    # Allowed by its Role:
    assert k8s.BatchV1Api(as_runner).list_namespaced_job(namespace).items == []
    # Refused: a verb, a resource and a namespace its Role does not grant.
    refused: list[Callable[[], object]] = [
        lambda: k8s.BatchV1Api(as_runner).create_namespaced_job(namespace, simulated_job()),
        lambda: k8s.CoreV1Api(as_runner).list_namespaced_secret(namespace),
        lambda: k8s.BatchV1Api(as_runner).list_namespaced_job("default"),
    ]
    for call in refused:
        with pytest.raises(k8s.ApiException) as err:
            call()
        assert err.value.status == 403


# --- the settings file ----------------------------------------------------------------------


def test_env_file_points_kubectl_and_helm_at_the_stack(stack: StackInfo) -> None:
    if stack.state_dir is None or stack.kind != "local":
        pytest.skip("env.sh is written by the local stack only")
    script = (
        f"set -e; source {stack.state_dir / 'env.sh'}; "
        "kubectl get node kwok-node-0 -o name; helm version --template '{{.Version}}'"
    )
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(stack.state_dir),
        },
    )
    assert out.stdout.splitlines()[0] == "node/kwok-node-0"
    assert out.stdout.splitlines()[1].startswith("v3.")


def test_plain_service_account_manifest_is_accepted_by_the_api_server(stack: StackInfo) -> None:
    manifest = Path(__file__).parents[2] / "config" / "service-account.yaml"
    out = stack.run(stack.env["KUBECTL_BIN"], "apply", "--dry-run=server", "-f", str(manifest))
    assert "serviceaccount/mstc created (server dry run)" in out.stdout
