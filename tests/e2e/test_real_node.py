"""The stack's real node: pods run as real containers in images built on this machine.

Selected with ``-m real_node`` and run only when the stack was started with
``MSTC_STACK_REAL_NODE=1`` (``make test-real-node``); skipped otherwise, saying so. Checks:
a pod on the node runs a command in the locally built Debian image to Completed and the API
server's log of it (kubectl logs, through the kubelet) is what the command printed; an image
the node lacks fails fast with ErrImageNeverPull, since nothing is ever pulled; and only pods
that tolerate the node's taint land on it; a worker request whose namespace is routed to the
node runs the example job's image (built here from its Dockerfile) against the stack's MinIO;
and the node's down leaves nothing of it on the machine.
"""

from __future__ import annotations

import io
import ipaddress
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s
from minio import Minio

import localstack
import realnode
import realnode_files
import realnode_services
import realnode_sweep
from realnode_files import NAMESPACE_ANNOTATIONS
from tests.support.realnode import real_node_pod, terminated, wait_pod, waiting_reason, why_not
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, WorkerProcess

pytestmark = [
    pytest.mark.real_node,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
]


def test_a_pod_runs_a_locally_built_image_to_completed_and_its_log_is_served(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    printed = "hello from a real container"
    pod = real_node_pod(
        stack.env["MSTC_REAL_NODE_BASE_IMAGE"],
        ["sh", "-c", f"echo '{printed}'; . /etc/os-release; echo \"$ID $VERSION_CODENAME\""],
    )
    core.create_namespaced_pod(ns, pod)
    done = wait_pod(
        core, ns, pod.metadata.name, lambda p: p.status.phase in ("Succeeded", "Failed")
    )

    assert done.spec.node_name == stack.env["MSTC_REAL_NODE"]
    assert done.status.phase == "Succeeded", done.status
    state = terminated(done)
    assert state is not None
    assert (state.exit_code, state.reason) == (0, "Completed")
    # An address from the node's own bridge network, whose gateway is the node's address.
    subnet = ipaddress.ip_network(f"{stack.env['MSTC_REAL_NODE_HOST_IP']}/24", strict=False)
    assert ipaddress.ip_address(done.status.pod_ip) in subnet
    logs = stack.run(stack.env["KUBECTL_BIN"], "logs", "-n", ns, pod.metadata.name).stdout
    assert logs.splitlines() == [printed, "debian bookworm"]


def test_an_image_the_node_lacks_fails_fast_with_err_image_never_pull(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    pod = real_node_pod("mstc.local/not-built-here:1", ["true"])
    core.create_namespaced_pod(ns, pod)
    # ContainerCreating comes first, while the sandbox starts; the image's verdict follows.
    waiting = wait_pod(
        core,
        ns,
        pod.metadata.name,
        lambda p: waiting_reason(p) not in (None, "ContainerCreating"),
        timeout=30,
    )
    assert waiting.spec.node_name == stack.env["MSTC_REAL_NODE"]
    assert waiting_reason(waiting) == "ErrImageNeverPull"


def test_a_pod_that_does_not_tolerate_the_taint_never_lands_on_the_real_node(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    # It selects the node's label but lacks the toleration: the scheduler must refuse it.
    pod = real_node_pod(stack.env["MSTC_REAL_NODE_BASE_IMAGE"], ["true"], tolerate=False)
    core.create_namespaced_pod(ns, pod)
    unschedulable = wait_pod(
        core,
        ns,
        pod.metadata.name,
        lambda p: any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            for c in (p.status.conditions or [])
        ),
        timeout=30,
    )
    assert not unschedulable.spec.node_name
    message = next(c.message for c in unschedulable.status.conditions if c.type == "PodScheduled")
    assert "1 node(s) had untolerated taint(s)" in message
    node = core.read_node(stack.env["MSTC_REAL_NODE"])
    # The node lifecycle controller may add a not-ready taint of its own for a moment when a
    # heartbeat is late; the stack's taint is the one that must always be there.
    assert ("mstc.io/real-node", "true", "NoSchedule") in [
        (t.key, t.value, t.effect) for t in node.spec.taints
    ]


def test_a_worker_request_runs_the_example_job_as_a_real_container(
    stack: StackInfo, api_client: k8s.ApiClient, core: k8s.CoreV1Api, ns: str, tmp_path: Path
) -> None:
    """The worker (on the host) makes its Job in a namespace routed to the real node; the
    example job's image, built here from examples/job/Dockerfile, reads the inputs from the
    stack's MinIO and writes the sorted outputs; the worker stores its log and replies."""
    core.patch_namespace(ns, {"metadata": {"annotations": NAMESPACE_ANNOTATIONS}})
    user, password = stack.s3_keys
    core.create_namespaced_secret(
        ns,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="mstc-minio"),
            string_data={"rootUser": user, "rootPassword": password},
        ),
    )
    s3 = Minio(stack.s3_host, access_key=user, secret_key=password, secure=False)
    source, target = f"in-{uuid.uuid4().hex[:10]}", f"out-{uuid.uuid4().hex[:10]}"
    s3.make_bucket(source)
    for name, data in {
        "run-1-fruit.txt": b"pear\napple\nfig\n",
        "run-1-n.txt": b"3\n1\n2\n",
    }.items():
        s3.put_object(source, name, io.BytesIO(data), len(data))

    queue = f"mstc.queue.work.real-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        stack,
        {
            "MSTC_NAMESPACE": ns,
            "MSTC_WORK_QUEUE": queue,
            "MSTC_RESULTS_QUEUE": f"{queue}.results",
            # Jobs reach MinIO at the node's address; the worker keeps 127.0.0.1 (MSTC_S3_ENDPOINT).
            "MINIO_SERVICE_HOST": stack.env["MSTC_REAL_NODE_MINIO_HOST"],
        },
        tmp_path,
    )
    client = AmqpClient(stack)
    worker.start()
    try:
        request = {
            "image": stack.env["MSTC_REAL_NODE_JOB_IMAGE"],
            "jobName": "sort-files",
            "inputBucket": source,
            "outputBucket": target,
            "prefix": "run-1",
            "timeOut": 5,
        }
        reply = client.wait(client.send(request, queue=queue), timeout=300)
    finally:
        client.close()
        worker.stop()

    assert reply["status"] == "succeeded", (reply, worker.log_text)
    assert read_object(s3, target, "run-1-fruit.txt.sorted") == b"apple\nfig\npear\n"
    assert read_object(s3, target, "run-1-n.txt.sorted") == b"1\n2\n3\n"
    log = read_object(s3, reply["logBucket"], reply["logObject"]).decode()
    assert f"sorted {source}/run-1-fruit.txt (3 lines)" in log  # printed by job.py, not KWOK
    assert log.rstrip().splitlines()[-1] == "SUCCESS"


def test_the_worker_image_built_here_from_the_dockerfile_runs_its_entrypoint(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    # No settings given: the worker's own entrypoint, from the image's virtualenv, as user
    # 10001, refuses to start and says why (exit code 2).
    pod = real_node_pod(stack.env["MSTC_REAL_NODE_WORKER_IMAGE"], [])
    pod.spec.containers[0].command = None
    core.create_namespaced_pod(ns, pod)
    done = wait_pod(
        core, ns, pod.metadata.name, lambda p: p.status.phase in ("Succeeded", "Failed")
    )
    state = terminated(done)
    assert state is not None
    assert state.exit_code == 2
    logs = stack.run(stack.env["KUBECTL_BIN"], "logs", "-n", ns, pod.metadata.name).stdout
    assert logs.startswith("mstc-worker: bad configuration:"), logs


def test_the_node_going_down_leaves_no_process_mount_bridge_or_cgroup_behind(
    stack: StackInfo, core: k8s.CoreV1Api, ns: str
) -> None:
    """realnode.down with a container running (a shim, its processes, a network namespace, a
    memory volume, a cgroup); the node is brought up again for whatever runs next."""
    cfg = localstack.Config.from_env()  # the settings the session's stack was started with
    lay = realnode_files.Layout(cfg)
    pod = real_node_pod(stack.env["MSTC_REAL_NODE_BASE_IMAGE"], ["sleep", "infinity"])
    pod.spec.volumes = [
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory"))
    ]
    pod.spec.containers[0].volume_mounts = [
        k8s.V1VolumeMount(name="scratch", mount_path="/scratch")
    ]
    core.create_namespaced_pod(ns, pod)
    wait_pod(core, ns, pod.metadata.name, lambda p: p.status.phase == "Running")
    assert realnode_sweep.our_mounts(lay)
    assert realnode_sweep.our_pids(lay)
    assert realnode_services.nft_tables()  # kube-proxy's

    realnode.down(cfg)
    try:
        assert realnode_sweep.our_mounts(lay) == []
        assert realnode_sweep.our_pids(lay) == set()
        assert not Path(f"/sys/class/net/{lay.bridge}").exists()
        assert [d for d in lay.cgroup_dirs() if d.exists()] == []
        assert realnode_services.nft_tables() == []
    finally:
        realnode.up(cfg)
