"""`helm install` into mstc-dev on the real control plane, and the chart's RBAC put to work.

The ServiceAccount's own token (TokenRequest API) is used for real API calls, checked with
SubjectAccessReview, and finally handed to the real worker process, which must run a request
end to end with nothing more than what the chart's Role grants.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from kubernetes import client as k8s
from minio import Minio

from tests.deploy.conftest import CHART, ROOT, Release, helm
from tests.support.kube import (
    WORKER_ACCESS,
    WORKER_DENIED,
    job_pods,
    sa_allowed,
    simulated_job,
    wait_job,
    watch_until,
)
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess

pytestmark = pytest.mark.stack


# What the worker does, as (verb, API group, resource, subresource).
def _secret(core: k8s.CoreV1Api, name: str, namespace: str) -> dict[str, str]:
    data = core.read_namespaced_secret(name, namespace).data
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def test_install_creates_the_three_parts(release: Release, api_client: k8s.ApiClient) -> None:
    apps, core = k8s.AppsV1Api(api_client), k8s.CoreV1Api(api_client)
    for name in (release.worker, release.rabbit, release.minio):
        deployment = apps.read_namespaced_deployment(name, release.namespace)
        assert deployment.status.ready_replicas == 1, name
    ports = {
        name: {p.port for p in core.read_namespaced_service(name, release.namespace).spec.ports}
        for name in (release.worker, release.rabbit, release.minio)
    }
    assert ports == {
        release.worker: {8080},
        release.rabbit: {5672, 15672, 1883},  # AMQP, management, MQTT (on by default)
        release.minio: {9000, 9001},
    }


def test_install_generates_credentials_that_are_not_the_defaults(
    release: Release, api_client: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(api_client)
    minio = _secret(core, release.minio, release.namespace)
    rabbit = _secret(core, release.rabbit, release.namespace)
    assert (minio["rootUser"], minio["rootPassword"]) != ("minioadmin", "minioadmin")
    assert (rabbit["username"], rabbit["password"]) != ("guest", "guest")
    assert len(minio["rootPassword"]) == len(rabbit["password"]) == 32
    # RabbitMQ's definitions hold the same user the worker logs in with.
    definitions = json.loads(rabbit["definitions.json"])
    assert definitions["users"] == [
        {"name": rabbit["username"], "password": rabbit["password"], "tags": "administrator"}
    ]


def test_upgrade_keeps_the_generated_credentials(
    stack: StackInfo, release: Release, api_client: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(api_client)
    before = [_secret(core, name, release.namespace) for name in (release.minio, release.rabbit)]
    helm(
        stack,
        "upgrade",
        release.name,
        str(ROOT / "charts" / "mstc-cloud-worker"),
        "-n",
        release.namespace,
        "--reuse-values",
        "--set",
        "worker.concurrency=8",
        "--wait",
        "--timeout",
        "120s",
    )
    after = [_secret(core, name, release.namespace) for name in (release.minio, release.rabbit)]
    assert after == before


def test_install_creates_rbac_and_broker_config(
    release: Release, api_client: k8s.ApiClient
) -> None:
    core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
    assert core.read_namespaced_service_account(release.service_account, release.namespace)
    role = rbac.read_namespaced_role(f"{release.worker}-job-runner", release.namespace)
    plain = list(yaml.safe_load_all((ROOT / "config" / "service-account.yaml").read_text()))
    (plain_role,) = [doc for doc in plain if doc["kind"] == "Role"]
    granted = [
        {"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs} for r in role.rules
    ]
    assert granted == plain_role["rules"]
    binding = rbac.read_namespaced_role_binding(f"{release.worker}-job-runner", release.namespace)
    assert [(s.kind, s.name) for s in binding.subjects] == [
        ("ServiceAccount", release.service_account)
    ]
    config = core.read_namespaced_config_map(f"{release.rabbit}-config", release.namespace)
    topology = json.loads(_secret(core, release.rabbit, release.namespace)["definitions.json"])
    assert {q["name"] for q in topology["queues"]} == {
        "mstc.queue.work",
        "mstc.queue.results",
        "mstc.queue.dead",
        "mstc.queue.control",
    }
    assert all(q["arguments"] == {} for q in topology["queues"])
    assert topology["policies"][0]["definition"] == {"dead-letter-exchange": "mstc.dlx"}
    assert "consumer_timeout = 1800000" in config.data["rabbitmq.conf"]


# --- the ServiceAccount's token -------------------------------------------------------------


@pytest.fixture(scope="module")
def sa_token(release: Release, api_client: k8s.ApiClient) -> str:
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    return str(
        k8s.CoreV1Api(api_client)
        .create_namespaced_service_account_token(
            release.service_account, release.namespace, request
        )
        .status.token
    )


@pytest.fixture(scope="module")
def as_worker(api_client: k8s.ApiClient, sa_token: str) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    cfg.host = api_client.configuration.host
    cfg.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {sa_token}"}
    return k8s.ApiClient(cfg)


def test_token_does_the_workers_whole_job(release: Release, as_worker: k8s.ApiClient) -> None:
    ns = release.namespace
    batch, core = k8s.BatchV1Api(as_worker), k8s.CoreV1Api(as_worker)
    job = batch.create_namespaced_job(ns, simulated_job(f"rbac-{uuid.uuid4().hex[:8]}"))
    name = job.metadata.name
    try:
        assert batch.read_namespaced_job(name, ns).metadata.uid == job.metadata.uid
        assert name in {j.metadata.name for j in batch.list_namespaced_job(ns).items}
        batch.patch_namespaced_job(name, ns, {"metadata": {"labels": {"mstc.test/patched": "yes"}}})
        # list + watch of Jobs, then of Pods, through the SA's token only.
        done = wait_job(batch, ns, name, "Complete")
        assert done.metadata.labels["mstc.test/patched"] == "yes"
        (pod,) = job_pods(core, ns, name)
        assert core.read_namespaced_pod(pod.metadata.name, ns).metadata.name == pod.metadata.name
        watch_until(
            core.list_namespaced_pod,
            lambda _type, p: p.status.phase == "Succeeded",
            namespace=ns,
            label_selector=f"job-name={name}",
        )
        assert "KWOK" in core.read_namespaced_pod_log(pod.metadata.name, ns)
    finally:
        batch.delete_namespaced_job(name, ns, propagation_policy="Background")


def test_token_is_refused_outside_its_role(release: Release, as_worker: k8s.ApiClient) -> None:
    ns = release.namespace
    batch, core, apps = (
        k8s.BatchV1Api(as_worker),
        k8s.CoreV1Api(as_worker),
        k8s.AppsV1Api(as_worker),
    )
    refused: list[Callable[[], object]] = [
        lambda: batch.list_namespaced_job("default"),
        lambda: batch.create_namespaced_job("default", simulated_job()),
        batch.list_job_for_all_namespaces,
        lambda: core.list_namespaced_secret(ns),
        lambda: core.read_namespaced_secret(release.minio, ns),
        lambda: apps.delete_namespaced_deployment(release.worker, ns),
        lambda: core.create_namespaced_pod(ns, {"metadata": {"name": "x"}, "spec": {}}),
        lambda: core.delete_collection_namespaced_pod(ns),
    ]
    for call in refused:
        with pytest.raises(k8s.ApiException) as err:
            call()
        assert err.value.status == 403


def test_subject_access_review_agrees(release: Release, api_client: k8s.ApiClient) -> None:
    ns, sa = release.namespace, release.service_account
    for access in WORKER_ACCESS:
        assert sa_allowed(api_client, ns, sa, ns, access), access
        assert not sa_allowed(api_client, ns, sa, "default", access), access
    for access in WORKER_DENIED:
        assert not sa_allowed(api_client, ns, sa, ns, access), access


# --- the real worker, with only the chart's RBAC --------------------------------------------


@pytest.fixture
def sa_kubeconfig(api_client: k8s.ApiClient, sa_token: str, tmp_path: Path) -> Path:
    """A kubeconfig like the in-cluster one: the stack's server and CA, the SA's token."""
    path = tmp_path / "kubeconfig-sa"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "stack",
                        "cluster": {
                            "server": api_client.configuration.host,
                            "certificate-authority": api_client.configuration.ssl_ca_cert,
                        },
                    }
                ],
                "users": [{"name": "mstc", "user": {"token": sa_token}}],
                "contexts": [{"name": "mstc", "context": {"cluster": "stack", "user": "mstc"}}],
                "current-context": "mstc",
            }
        )
    )
    return path


@pytest.fixture
def work_queue(stack: StackInfo) -> Iterator[str]:
    name = f"mstc.queue.work.deploy-{uuid.uuid4().hex[:8]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        channel = conn.channel()
        channel.queue_delete(name)
        channel.queue_delete(f"{name}.results")
    finally:
        conn.close()


def test_worker_runs_a_request_with_the_charts_service_account(
    stack: StackInfo,
    release: Release,
    api_client: k8s.ApiClient,
    sa_kubeconfig: Path,
    work_queue: str,
    tmp_path: Path,
) -> None:
    user, password = stack.s3_keys
    s3 = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
    bucket = f"deploy-{uuid.uuid4().hex[:10]}"
    s3.make_bucket(bucket)
    s3.put_object(bucket, "run-1-input.txt", io.BytesIO(b"b\na\n"), 4)

    worker = WorkerProcess(
        stack,
        {
            "KUBECONFIG": str(sa_kubeconfig),
            "MSTC_NAMESPACE": release.namespace,
            "MSTC_WORK_QUEUE": work_queue,
            "MSTC_RESULTS_QUEUE": f"{work_queue}.results",
            "MSTC_MINIO_SECRET_NAME": release.minio,
            "MSTC_SHUTDOWN_GRACE_SECONDS": "5",
        },
        tmp_path,
    )
    client = AmqpClient(stack)
    batch = k8s.BatchV1Api(api_client)
    reply: dict[str, Any] = {}
    try:
        worker.start()
        request = {
            "image": "example.invalid/mstc-example-job:1",
            "jobName": "deploy-check",
            "inputBucket": bucket,
            "prefix": "run-1",
            "annotations": {"mstc.test/run-for": "1s"},
        }
        reply = client.wait(client.send(request, queue=work_queue), timeout=120)
        assert reply["status"] == "succeeded", (reply, worker.log_text)
        assert reply["result"] == f"Job {reply['jobName']} complete."
        assert reply["namespace"] == release.namespace
        # The worker read the pod's log (pods/log) and uploaded it.
        log = s3.get_object(reply["logBucket"], reply["logObject"])
        try:
            assert b"KWOK" in log.read()
        finally:
            log.close()
            log.release_conn()
        job = batch.read_namespaced_job(reply["jobName"], release.namespace)
        env = {e.name: e for e in job.spec.template.spec.containers[0].env}
        # The Job's own MinIO key, in a Secret the worker made (secrets: create) for it.
        own = f"{reply['jobName']}-storage"
        assert env["MINIO_ROOT_USER"].value_from.secret_key_ref.name == own
        secret = k8s.CoreV1Api(api_client).read_namespaced_secret(own, release.namespace)
        assert [ref.uid for ref in secret.metadata.owner_references] == [job.metadata.uid]
        assert "Forbidden" not in worker.log_text
    finally:
        worker.stop()
        client.close()
        if reply.get("jobName"):
            batch.delete_namespaced_job(
                reply["jobName"], release.namespace, propagation_policy="Background"
            )
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)


def test_the_chart_labels_its_namespace_for_pod_security(
    stack: StackInfo, api_client: k8s.ApiClient, namespace: str
) -> None:
    """As values.yaml says: the namespace exists first, the chart adopts and labels it."""
    release = f"ps-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(api_client)
    install = ["install", release, str(CHART), "-n", namespace, "--take-ownership"]
    helm(stack, *install, "--set", "podSecurity.labelNamespace=true",
         "--set", f"serviceAccount.name=mstc-{release}")  # fmt: skip
    try:
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        privileged = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="privileged"),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(
                name="c", image="busybox:1",
                security_context=k8s.V1SecurityContext(privileged=True),
            )]),
        )  # fmt: skip
        with pytest.raises(k8s.ApiException) as refused:
            core.create_namespaced_pod(namespace, privileged)
        assert refused.value.status == 403
        message = json.loads(refused.value.body)["message"]
        assert 'violates PodSecurity "baseline:latest": privileged' in message
    finally:
        helm(stack, "uninstall", release, "-n", namespace, "--wait")
    # Uninstalling leaves the namespace (and whatever else runs there) alone.
    assert core.read_namespace(namespace).status.phase == "Active"
