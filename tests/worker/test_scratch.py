"""A request's `scratch` directory on the real stack: the Job and its pod carry the emptyDir.

KWOK runs no containers, so what is checked is what Kubernetes accepted and the Job
controller copied into the pod: the volume and its mount, as the API server stores them.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from tests.support.worker import AmqpClient
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack


def test_a_request_with_scratch_makes_a_pod_with_the_empty_dir_mounted(
    make_worker: MakeWorker, client: AmqpClient, bucket: str, work_queue: str,
    api_client: k8s.ApiClient, namespace: str,
) -> None:  # fmt: skip
    make_worker(MSTC_JOB_TTL_SECONDS="600")  # the Job must outlive the reply to be read
    body: dict[str, Any] = {
        "image": "example.invalid/job:1",
        "jobName": "scratch",
        "inputBucket": bucket,
        "scratch": {"mountPath": "/scratch", "sizeLimit": "20Gi"},
    }
    reply = client.wait(client.send(body, queue=work_queue), timeout=120)
    assert reply["status"] == "succeeded", reply
    job = k8s.BatchV1Api(api_client).read_namespaced_job(reply["jobName"], namespace)
    pods = (
        k8s.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"job-name={reply['jobName']}")
        .items
    )
    assert pods, "the Job controller made no pod"
    for spec in (job.spec.template.spec, *(pod.spec for pod in pods)):
        (volume,) = [v for v in spec.volumes if v.name == "scratch"]
        assert volume.empty_dir.size_limit == "20Gi"
        (mount,) = [m for m in spec.containers[0].volume_mounts if m.name == "scratch"]
        assert mount.mount_path == "/scratch"
