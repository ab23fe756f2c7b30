"""No one gets in: default credentials refused, the worker's RBAC proven least-privilege.

The RBAC check uses the API server's own SubjectAccessReview on the ServiceAccount and Role of
config/service-account.yaml (the deployment without Helm), applied into a fresh namespace;
tests/deploy asks the same of the chart's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import utils as k8s_utils

from tests.faults.report import FaultRecord
from tests.support.kube import WORKER_ACCESS, WORKER_DENIED, sa_allowed
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess
from tests.worker.conftest import MakeWorker
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
    fault.saw(f"exit code 2 naming {named}; with MSTC_ALLOW_DEFAULT_CREDENTIALS it started")


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
        "SubjectAccessReview: its verbs allowed in its namespace only; secrets, exec, "
        "changing pods, RBAC and other kinds denied"
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
        f"{len(WORKER_DENIED)} others denied (secrets, pods create/delete, exec, jobs update, "
        "deployments, roles)"
    )


def test_an_image_outside_the_allow_list_is_refused(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "a request for an image outside MSTC_IMAGE_ALLOW (registry.example.org/*)"
    fault.expected = "rejected with the reason, no Job; an allowed image still runs"
    make_worker(MSTC_IMAGE_ALLOW="registry.example.org/*")
    reply = client.wait(client.send(request(bucket), queue=work_queue))
    assert reply["status"] == "rejected"
    assert reply["reason"] == "ImageNotAllowed"
    assert k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items == []
    allowed = request(bucket, image="registry.example.org/tools/sort:2")
    assert client.wait(client.send(allowed, queue=work_queue))["status"] == "succeeded"
    fault.saw(f"rejected: {reply['error'][:100]}; no Job; registry.example.org image succeeded")
