"""The chart's way out of the reply-pending finalizer: its pre-delete hook, and an uninstall.

Images do not run on KWOK, so the hook's command is run from the host instead, with the token
of the very ServiceAccount the installed hook names: what it needs must be granted to that
account. The hook Job itself does run (KWOK ends its pod), which shows it does not hold up
`helm uninstall`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.deploy.conftest import CHART, find, helm, render
from tests.deploy.test_chart import env_of
from tests.support.kube import simulated_job, wait_gone
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient

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


@pytest.fixture
def own_namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A namespace for one install, which the test deletes itself (a 404 later is fine)."""
    core = k8s.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


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


def test_uninstall_after_release_leaves_no_job_terminating_and_the_namespace_deletes(
    stack: StackInfo, api_client: k8s.ApiClient, own_namespace: str, tmp_path: Path
) -> None:
    ns, name = own_namespace, f"rh-{uuid.uuid4().hex[:6]}"
    helm(stack, "install", name, str(CHART), "-n", ns, "--wait", "--timeout", "120s")
    hooks = [doc for doc in yaml.safe_load_all(helm(stack, "get", "hooks", name, "-n", ns).stdout)]
    hook_pod = hook_job([doc for doc in hooks if doc], name)["spec"]["template"]["spec"]
    account = hook_pod["serviceAccountName"]
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    client = AmqpClient(stack)
    try:
        correlation_id = str(uuid.uuid4())
        job = batch.create_namespaced_job(ns, held_job(client.reply_queue, correlation_id))

        done = subprocess.run(
            [sys.executable, "-m", "mstc_worker", "release", "--timeout", "20"],
            env={
                **os.environ,
                **stack.env,
                "KUBECONFIG": str(token_kubeconfig(api_client, ns, account, tmp_path / "kc")),
                "MSTC_NAMESPACE": ns,
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        reply = client.wait(correlation_id, timeout=30)
        assert (reply["status"], reply["reason"]) == ("error", "WorkerReleased")
    finally:
        client.close()
    helm(stack, "uninstall", name, "-n", ns, "--wait", "--timeout", "120s")

    assert [j for j in batch.list_namespaced_job(ns).items if j.metadata.finalizers] == []
    wait_gone(
        batch.list_namespaced_job, namespace=ns, field_selector=f"metadata.name={job.metadata.name}"
    )
    core.delete_namespace(ns)
    wait_gone(core.list_namespace, field_selector=f"metadata.name={ns}", timeout=90)
