"""`helm uninstall` with Jobs in flight: the chart's pre-delete hook lets go of them.

The worker's Jobs carry the `mstc.io/reply-pending` finalizer until their reply is out; with
the worker uninstalled nobody would take it off, the Jobs would stay Terminating and the
namespace would never delete. The hook runs `mstc-worker release`. Images do not run on
KWOK, so the hook's command is run from the host, with the token of the very ServiceAccount
the installed hook names (what it needs must be granted to that account); the hook Job itself
runs (KWOK ends its pod), which shows it does not hold up the uninstall. The hook's rendering
is tested in tests/deploy/test_release_hook.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.deploy.conftest import CHART, helm
from tests.deploy.test_release_hook import held_job, hook_job, token_kubeconfig
from tests.faults.report import FaultRecord
from tests.support.kube import wait_gone
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient

pytestmark = pytest.mark.stack

IN_FLIGHT = 2


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


def test_uninstall_with_jobs_in_flight_leaves_no_job_terminating_and_the_namespace_deletes(
    stack: StackInfo, api_client: k8s.ApiClient, own_namespace: str, tmp_path: Path,
    fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = (
        f"helm uninstall with {IN_FLIGHT} Jobs in flight (running 60 s, holding the "
        "reply-pending finalizer, their worker gone)"
    )
    fault.expected = (
        "the pre-delete hook's release answers each Job exactly once (WorkerReleased) and lets "
        "it go; no Job left Terminating; deleting the namespace completes"
    )
    ns, name = own_namespace, f"rh-{uuid.uuid4().hex[:6]}"
    helm(stack, "install", name, str(CHART), "-n", ns, "--wait", "--timeout", "120s")
    hooks = [doc for doc in yaml.safe_load_all(helm(stack, "get", "hooks", name, "-n", ns).stdout)]
    hook_pod = hook_job([doc for doc in hooks if doc], name)["spec"]["template"]["spec"]
    account = hook_pod["serviceAccountName"]
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    client = AmqpClient(stack)
    try:
        cids = [str(uuid.uuid4()) for _ in range(IN_FLIGHT)]
        held = [batch.create_namespaced_job(ns, held_job(client.reply_queue, c)) for c in cids]

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
        replies = [client.wait(cid, timeout=30) for cid in cids]
        assert {(r["status"], r["reason"]) for r in replies} == {("error", "WorkerReleased")}
        client.barrier()
        per_job = sorted({len(client.replies[cid]) for cid in cids})
        assert per_job == [1]
    finally:
        client.close()
    helm(stack, "uninstall", name, "-n", ns, "--wait", "--timeout", "120s")

    terminating = [j.metadata.name for j in batch.list_namespaced_job(ns).items
                   if j.metadata.finalizers]  # fmt: skip
    assert terminating == []
    for job in held:
        wait_gone(
            batch.list_namespaced_job,
            namespace=ns,
            field_selector=f"metadata.name={job.metadata.name}",
        )
    started = time.monotonic()
    core.delete_namespace(ns)
    wait_gone(core.list_namespace, field_selector=f"metadata.name={ns}", timeout=90)
    took = time.monotonic() - started

    fault.saw(
        f"release exit code {done.returncode}; {len(replies)} Jobs answered "
        f"{sorted({r['reason'] for r in replies})}, replies per Job {per_job}; after the "
        f"uninstall {len(terminating)} Jobs with a finalizer; the namespace deleted in "
        f"{took:.1f} s"
    )
