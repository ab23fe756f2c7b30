"""The chart's way out of the reply-pending finalizer: its pre-delete hook, as rendered.

The uninstall itself, with Jobs in flight, is a row of the fault table:
tests/faults/test_uninstall.py, which uses the helpers here (the hook Job of a rendering, a
kubeconfig with a ServiceAccount's token, a Job as the worker leaves it).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.deploy.conftest import find, render
from tests.deploy.test_chart import env_of
from tests.support.kube import simulated_job
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

FINALIZER = "mstc.io/reply-pending"


def hook_job(objects: list[dict[str, Any]], release: str) -> dict[str, Any]:
    return find(objects, "Job", f"{release}-mstc-cloud-worker-release")


def test_hook_is_a_pre_delete_release_with_the_workers_account_and_settings(
    stack: StackInfo,
) -> None:
    objects = render(stack, {"serviceAccount.name": "mstc-x", "worker.claimStaleSeconds": "45"})
    hook, deployment = hook_job(objects, "t"), find(objects, "Deployment", "t-mstc-cloud-worker")
    annotations = hook["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    pod = hook["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "release"
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["serviceAccountName"] == "mstc-x"
    assert pod["restartPolicy"] == "Never"
    assert hook["spec"]["activeDeadlineSeconds"] > 60  # the release's own bound, then some
    # The same settings as the worker (broker, MinIO, queues, claim staleness), less the REST
    # port's token, which only the server reads (the hook mounts no token).
    worker_env = env_of(deployment)
    assert worker_env.pop("MSTC_HTTP_TOKEN_FILE")
    assert env_of({"spec": {"template": {"spec": pod}}}) == worker_env
    # Its pod is not one of the worker's: the worker's Service must not select it.
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = hook["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= labels.items()


def token_kubeconfig(api_client: k8s.ApiClient, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig like the in-cluster one: the stack's server and CA, the account's token."""
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    core = k8s.CoreV1Api(api_client)
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    server = api_client.configuration
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "stack",
                        "cluster": {
                            "server": server.host,
                            "certificate-authority": server.ssl_ca_cert,
                        },
                    }
                ],
                "users": [{"name": "hook", "user": {"token": token}}],
                "contexts": [{"name": "hook", "context": {"cluster": "stack", "user": "hook"}}],
                "current-context": "hook",
            }
        )
    )
    return path


def held_job(reply_to: str, correlation_id: str) -> k8s.V1Job:
    """A Job as the worker leaves it: its finalizer, its reply route, running for 60 s."""
    job = simulated_job(f"held-{uuid.uuid4().hex[:8]}", run_for="60s")
    job.metadata.labels = {"app.kubernetes.io/created-by": "mstc-cloud-worker"}
    job.metadata.finalizers = [FINALIZER]
    job.metadata.annotations = {
        "mstc.io/claimed-by": "",
        "mstc.io/reply-to": reply_to,
        "mstc.io/correlation-id": correlation_id,
    }
    return job
