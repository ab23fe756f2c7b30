"""No one gets in: default credentials refused, the worker's RBAC proven least-privilege.

The RBAC check uses the API server's own SubjectAccessReview on the ServiceAccount and Role of
config/service-account.yaml (the deployment without Helm), applied into a fresh namespace;
tests/deploy asks the same of the chart's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils
from kubernetes import watch as k8s_watch
from minio import Minio
from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException
from minio.minioadmin import MinioAdmin

from mstc_worker.manifest import build_job
from mstc_worker.protocol import parse_request
from mstc_worker.settings import load_settings
from tests.faults.report import FaultRecord
from tests.support.jobs_made import JobsMade
from tests.support.kube import WORKER_ACCESS, WORKER_DENIED, sa_allowed
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
from tests.worker.test_job_credentials import as_job, job_key, put, refused
from tests.worker.test_service import request

pytestmark = pytest.mark.stack

ROOT = Path(__file__).parents[2]
DEFAULTS = {
    "broker": {"WORK_QUEUE_USER": "guest", "WORK_QUEUE_PASS": "guest"},
    "MinIO": {"MINIO_ROOT_USER": "minioadmin", "MINIO_ROOT_PASSWORD": "minioadmin"},
}


def worker_env(stack: StackInfo, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", **stack.env, **extra}
    env.pop("MSTC_AMQP_URL", None)  # the Java names must decide, not the URL
    env.pop("MSTC_ALLOW_DEFAULT_CREDENTIALS", None)
    return env


@pytest.mark.parametrize("service", list(DEFAULTS))
def test_default_credentials_are_refused_unless_allowed(
    service: str, stack: StackInfo, tmp_path: Path, fault: FaultRecord
) -> None:
    fault.fault = f"the worker started with the {service}'s well-known default credentials"
    fault.expected = "refused at start (exit 2, the variables named); starts with the dev flag"
    env = worker_env(stack, **DEFAULTS[service])
    out = subprocess.run(
        [sys.executable, "-m", "mstc_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    named = next(iter(DEFAULTS[service]))
    assert named in out.stderr
    assert "well-known default" in out.stderr
    assert "MSTC_ALLOW_DEFAULT_CREDENTIALS" in out.stderr

    # With the development flag the same settings get past the check: the worker serves HTTP.
    allowed = WorkerProcess(stack, {**env, "MSTC_ALLOW_DEFAULT_CREDENTIALS": "true"}, tmp_path)
    allowed.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while allowed.get("/healthz")[0] != 200:
            assert allowed.proc is not None
            assert allowed.proc.poll() is None, allowed.log_text
            assert time.monotonic() < deadline, allowed.log_text
            time.sleep(0.1)  # polling the liveness probe, as Kubernetes does
    finally:
        allowed.stop()
    assert "bad configuration" not in allowed.log_text
    fault.saw(
        f"exit code {out.returncode} naming {named}; with MSTC_ALLOW_DEFAULT_CREDENTIALS it "
        "started (/healthz 200)"
    )


def test_a_jobs_credentials_are_refused_outside_their_scope(
    stack: StackInfo, fault: FaultRecord
) -> None:
    fault.fault = (
        "a Job's own MinIO key (request: input bucket A, output bucket B, prefix run-1) used on "
        "another bucket, another prefix, for a delete and for an admin call"
    )
    fault.expected = "MinIO refuses each (AccessDenied / 403); A/run-1 reads and B/run-1 writes"
    user, password = stack.s3_keys
    root = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
    inputs, outputs, other = (f"{role}-{uuid.uuid4().hex[:12]}" for role in ("in", "out", "x"))
    for bucket in (inputs, outputs, other):
        root.make_bucket(bucket)
        put(root, bucket, "run-1-a.txt")
        put(root, bucket, "run-2-a.txt")
    key = job_key(stack, inputs, outputs, "run-1")
    job = as_job(stack, key)
    job.stat_object(inputs, "run-1-a.txt")
    put(job, outputs, "run-1-b.txt")
    codes = {
        "other prefix (input)": refused(lambda: job.stat_object(inputs, "run-2-a.txt")),
        "other prefix (output)": refused(lambda: put(job, outputs, "run-2-b.txt")),
        "other bucket": refused(lambda: job.stat_object(other, "run-1-a.txt")),
        "write to input": refused(lambda: put(job, inputs, "run-1-b.txt")),
        "delete": refused(lambda: job.remove_object(outputs, "run-1-a.txt")),
    }
    assert set(codes.values()) == {"AccessDenied"}, codes
    admin = MinioAdmin(
        endpoint=stack.s3_host,
        credentials=StaticProvider(key.access_key, key.secret_key, key.session_token),
        secure=False,
    )
    with pytest.raises(MinioAdminException) as caught:
        admin.user_add("intruder", "intruder-secret-1")
    assert caught.value._code == "403"
    fault.saw(
        f"{len(codes)} S3 calls outside the scope refused ({', '.join(codes)}: AccessDenied); "
        "admin user add: 403; A/run-1 read and B/run-1 written"
    )


def _in_namespace(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """config/service-account.yaml's objects moved into `namespace` (its Namespace left out)."""
    moved = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
        moved.append(obj)
    return moved


def test_the_workers_rbac_allows_exactly_what_it_uses(
    api_client: k8s.ApiClient, namespace: str, fault: FaultRecord
) -> None:
    fault.fault = "the worker's ServiceAccount (config/service-account.yaml) asks for more"
    fault.expected = (
        "SubjectAccessReview: its verbs allowed in its namespace only; reading or changing "
        "secrets, exec, changing pods, RBAC and other kinds denied"
    )
    objects = list(yaml.safe_load_all((ROOT / "config" / "service-account.yaml").read_text()))
    k8s_utils.create_from_yaml(api_client, yaml_objects=_in_namespace(objects, namespace))
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    for access in WORKER_ACCESS:
        assert sa_allowed(api_client, namespace, sa, namespace, access), access
        assert not sa_allowed(api_client, namespace, sa, "default", access), access
    for access in WORKER_DENIED:
        assert not sa_allowed(api_client, namespace, sa, namespace, access), access
    fault.saw(
        f"{len(WORKER_ACCESS)} needed accesses allowed in its namespace and denied in another; "
        f"{len(WORKER_DENIED)} others denied (secrets but create, pods create/delete, exec, "
        "jobs update, deployments, roles)"
    )


def test_an_image_outside_the_allow_list_is_refused(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "a request for an image outside MSTC_IMAGE_ALLOW (registry.example.org/*)"
    fault.expected = "rejected with the reason, no Job made; an allowed image still runs"
    make_worker(MSTC_IMAGE_ALLOW="registry.example.org/*")
    reply = client.wait(client.send(request(bucket), queue=work_queue))
    assert reply["status"] == "rejected"
    assert reply["reason"] == "ImageNotAllowed"
    made = jobs_made.count()
    assert made == 0
    allowed = request(bucket, image="registry.example.org/tools/sort:2")
    after = client.wait(client.send(allowed, queue=work_queue))["status"]
    assert after == "succeeded"
    fault.saw(
        f"{reply['status']}: {reply['error'][:100]}; Jobs made: {made}; registry.example.org "
        f"image {after}"
    )


def test_labels_and_annotations_outside_the_allow_list_are_refused(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, jobs_made: JobsMade, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = (
        "requests with `app: minio` as a label or `sidecar.istio.io/inject` as an annotation "
        "(the stack allows only mstc.test/ annotations)"
    )
    fault.expected = "rejected naming the key and the setting, no Job made; mstc.test/ still works"
    make_worker()
    refused = {
        "labels": ({"app": "minio"}, "MSTC_REQUEST_LABEL_PREFIXES"),
        "annotations": ({"sidecar.istio.io/inject": "true"}, "MSTC_REQUEST_ANNOTATION_PREFIXES"),
    }
    errors = []
    for field, (keys, setting) in refused.items():
        reply = client.wait(client.send(request(bucket, **{field: keys}), queue=work_queue))
        assert reply["status"] == "rejected", reply
        (key,) = keys
        assert f"key '{key}' in '{field}' is not allowed" in reply["error"]
        assert setting in reply["error"]
        errors.append(reply["error"][:70])
    made = jobs_made.count()
    assert made == 0
    allowed = request(bucket, annotations={"mstc.test/run-for": "1s"})
    after = client.wait(client.send(allowed, queue=work_queue))["status"]
    assert after == "succeeded"
    fault.saw(f"rejected: {'; '.join(errors)}; Jobs made: {made}; a mstc.test/ annotation: {after}")


# --- Pod Security: what the worker's own token can and cannot run -----------------------------

ENFORCE = "pod-security.kubernetes.io/enforce"
# What a request never gets from the worker, but the worker's `jobs: create` could ask for.
UNSAFE_PODS: dict[str, dict[str, Any]] = {
    "privileged": {
        "containers": [
            {"name": "job", "image": "busybox:1", "securityContext": {"privileged": True}}
        ]
    },
    "hostPath": {
        "containers": [
            {
                "name": "job",
                "image": "busybox:1",
                "volumeMounts": [{"name": "host", "mountPath": "/host"}],
            }
        ],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    },
}


def _as_the_worker(api_client: k8s.ApiClient, namespace: str, level: str) -> k8s.ApiClient:
    """Enforce Pod Security `level` in `namespace`, give it config/service-account.yaml's
    ServiceAccount and Role, and return a client holding only that ServiceAccount's token."""
    core = k8s.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": {ENFORCE: level}}})
    objects = list(yaml.safe_load_all((ROOT / "config" / "service-account.yaml").read_text()))
    k8s_utils.create_from_yaml(api_client, yaml_objects=_in_namespace(objects, namespace))
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    spec = k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    token = core.create_namespaced_service_account_token(
        sa, namespace, k8s.AuthenticationV1TokenRequest(spec=spec)
    ).status.token
    cfg = k8s.Configuration()
    cfg.host = api_client.configuration.host
    cfg.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return k8s.ApiClient(cfg)


def _create_job(worker: k8s.ApiClient, namespace: str, job: dict[str, Any]) -> str:
    """Create `job` as the worker; return the API server's warning text ("" if none)."""
    _, status, headers = k8s.BatchV1Api(worker).create_namespaced_job_with_http_info(namespace, job)
    assert status == 201
    # RFC 7234 form: 299 - "text", the text's quotes escaped.
    header = str(headers.get("Warning", ""))
    return header.removeprefix('299 - "').removesuffix('"').replace('\\"', '"')


def _first_event(api_client: k8s.ApiClient, namespace: str, job: str) -> Any:
    """The first event the Job controller records for `job` (waits up to 60 s)."""
    selector = f"involvedObject.kind=Job,involvedObject.name={job}"
    watch = k8s_watch.Watch()
    for item in watch.stream(
        k8s.CoreV1Api(api_client).list_namespaced_event,
        namespace,
        field_selector=selector,
        timeout_seconds=60,
    ):
        watch.stop()
        return item["object"]
    raise AssertionError(f"no event for Job {job} within 60 s")


def _pods_since(api_client: k8s.ApiClient, namespace: str, job: str, version: str) -> list[str]:
    """Every pod event of `job` since resource `version`: the watch replays them all."""
    stream = k8s_watch.Watch().stream(
        k8s.CoreV1Api(api_client).list_namespaced_pod,
        namespace,
        label_selector=f"job-name={job}",
        resource_version=version,
        timeout_seconds=2,
    )
    return [f"{item['type']} {item['object'].metadata.name}" for item in stream]


@pytest.mark.parametrize("kind", list(UNSAFE_PODS))
def test_a_privileged_or_host_path_job_is_refused_with_the_workers_token(
    kind: str, api_client: k8s.ApiClient, namespace: str, fault: FaultRecord
) -> None:
    fault.fault = (
        f"a {kind} Job created with the worker's own token (its jobs: create) in a namespace "
        "enforcing Pod Security baseline"
    )
    fault.expected = (
        "the Job is admitted with a PodSecurity warning; its pod is refused (FailedCreate); "
        "no pod ever exists"
    )
    worker = _as_the_worker(api_client, namespace, "baseline")
    before = k8s.CoreV1Api(api_client).list_namespaced_pod(namespace).metadata.resource_version
    name = f"unsafe-{kind.lower()}"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", **UNSAFE_PODS[kind]}},
        },
    }
    warning = _create_job(worker, namespace, job)
    assert 'would violate PodSecurity "baseline:latest"' in warning
    event = _first_event(api_client, namespace, name)
    assert event.reason == "FailedCreate", event
    assert 'violates PodSecurity "baseline:latest"' in event.message
    pods = _pods_since(api_client, namespace, name, before)
    assert pods == []
    fault.saw(
        f"warning on create: {warning[:90]}; event {event.reason}: {event.message[-90:]}; "
        f"pod events seen: {len(pods)}"
    )


@pytest.mark.parametrize(("level", "non_root"), [("baseline", "false"), ("restricted", "true")])
def test_the_workers_own_jobs_are_admitted_under_pod_security(
    level: str, non_root: str, stack: StackInfo, api_client: k8s.ApiClient, namespace: str,
    fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = (
        f"the worker's own Job (MSTC_JOB_RUN_AS_NON_ROOT={non_root}) in a namespace enforcing "
        f"Pod Security {level}, created with the worker's token"
    )
    fault.expected = "admitted without a warning; its pod created"
    worker = _as_the_worker(api_client, namespace, level)
    settings = load_settings(
        {**stack.env, "MSTC_NAMESPACE": namespace, "MSTC_JOB_RUN_AS_NON_ROOT": non_root}
    )
    body = json.dumps({"image": "busybox:1", "jobName": "hardened", "inputBucket": "in-bucket"})
    job = build_job(
        parse_request(body.encode(), settings=settings), request_id="ps-1", settings=settings
    )
    job["metadata"]["finalizers"] = []  # no worker here to let it go
    job["spec"].pop("suspend")  # nor to give it its credentials Secret and resume it
    warning = _create_job(worker, namespace, job)
    assert warning == ""
    event = _first_event(api_client, namespace, job["metadata"]["name"])
    assert event.reason == "SuccessfulCreate", event.message
    fault.saw(f"created, warning: {warning or 'none'}; event {event.reason}: {event.message[-60:]}")
