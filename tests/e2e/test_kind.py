"""End to end on a real cluster: images built, chart installed on kind, the example job run.

Runs only with MSTC_TEST_CLUSTER=kind on a machine with docker (and a running engine), kind
and helm; skipped otherwise, naming what is missing. It builds the worker's and the example
job's images, creates a kind cluster, loads the images into it, installs the chart (real
RabbitMQ and MinIO pods), uploads real files, sends the request the way Java-era clients do
(pika to mstc.exchange, reply_to + correlation_id), then checks the sorted outputs, the summary
and the job's log in MinIO, and deletes the cluster.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from tests.deploy.conftest import CHART, ROOT
from tests.support.s3 import read_object
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient

pytestmark = pytest.mark.kind

RELEASE = "mstc-cloud-worker"
NAMESPACE = "mstc-dev"
TAG = "e2e"
WORKER_IMAGE = f"mstc-cloud-worker:{TAG}"
JOB_IMAGE = f"mstc-example-job:{TAG}"


def _helm_bin() -> str | None:
    return os.environ.get("HELM_BIN") or shutil.which("helm")


def _why_not() -> str | None:
    """Why this test cannot run here, or None when it can."""
    if os.environ.get("MSTC_TEST_CLUSTER") != "kind":
        return "kind end-to-end test: set MSTC_TEST_CLUSTER=kind (needs docker, kind and helm)"
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if _helm_bin() is None:
        missing.append("helm")
    if missing:
        return f"kind end-to-end test needs {', '.join(missing)} on PATH"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "kind end-to-end test needs a running Docker engine (`docker info` failed)"
    return None


def run(*argv: str, timeout: float = 900) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}{out.stderr}"
        )
    return out.stdout


class Cluster:
    """A kind cluster of its own, reached through its own kubeconfig."""

    def __init__(self, workdir: Path) -> None:
        self.name = f"mstc-e2e-{uuid.uuid4().hex[:6]}"
        self.kubeconfig = workdir / "kubeconfig"
        self.forwards: list[subprocess.Popen[str]] = []

    def kubectl(self, *args: str) -> str:
        return run("kubectl", "--kubeconfig", str(self.kubeconfig), *args)

    def secret(self, name: str, key: str) -> str:
        value = self.kubectl(
            "-n", NAMESPACE, "get", "secret", name, "-o", f"jsonpath={{.data.{key}}}"
        )
        return base64.b64decode(value).decode()

    def port_forward(self, service: str, port: int) -> int:
        """Forward a local port to the Service; return it once kubectl says it listens."""
        proc = subprocess.Popen(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "-n", NAMESPACE,
             "port-forward", f"svc/{service}", f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.forwards.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until kubectl reports the listener (or exits)
        match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        assert match, f"port-forward to {service}:{port} failed: {line}"
        return int(match.group(1))

    def delete(self) -> None:
        for proc in self.forwards:
            proc.terminate()
            proc.wait(timeout=30)
        subprocess.run(["kind", "delete", "cluster", "--name", self.name], check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    run("docker", "build", "-t", WORKER_IMAGE, str(ROOT))
    run("docker", "build", "-t", JOB_IMAGE, str(ROOT / "examples" / "job"))
    kind = Cluster(tmp_path)
    try:
        run("kind", "create", "cluster", "--name", kind.name,
            "--kubeconfig", str(kind.kubeconfig), "--wait", "180s")  # fmt: skip
        for image in (WORKER_IMAGE, JOB_IMAGE):
            run("kind", "load", "docker-image", image, "--name", kind.name)
        helm = _helm_bin()
        assert helm is not None
        run(
            helm, "install", RELEASE, str(CHART), "--kubeconfig", str(kind.kubeconfig),
            "--namespace", NAMESPACE, "--create-namespace",
            "--set", "image.repository=mstc-cloud-worker", "--set", f"image.tag={TAG}",
            # RabbitMQ and MinIO images are pulled from Docker Hub by the kind node.
            "--wait", "--timeout", "10m",
        )  # fmt: skip
        yield kind
    finally:
        kind.delete()


def test_example_job_runs_through_the_installed_chart(cluster: Cluster) -> None:
    rabbit, minio = f"{RELEASE}-mstc-work-queue", f"{RELEASE}-minio"
    amqp_port = cluster.port_forward(rabbit, 5672)
    s3_port = cluster.port_forward(minio, 9000)
    s3 = Minio(
        f"127.0.0.1:{s3_port}",
        access_key=cluster.secret(minio, "rootUser"),
        secret_key=cluster.secret(minio, "rootPassword"),
        secure=False,
    )
    source, target = "e2e-in", "e2e-out"
    s3.make_bucket(source)
    for name, data in {
        "run-1-fruit.txt": b"pear\napple\nfig\n",
        "run-1-n.txt": b"3\n1\n2\n",
    }.items():
        s3.put_object(source, name, io.BytesIO(data), len(data))

    user, password = cluster.secret(rabbit, "username"), cluster.secret(rabbit, "password")
    url = f"amqp://{user}:{password}@127.0.0.1:{amqp_port}/%2F"
    client = AmqpClient(StackInfo(env={"MSTC_AMQP_URL": url}, kind="kind"))
    try:
        request = {
            "image": JOB_IMAGE,
            "jobName": "sort-files",
            "inputBucket": source,
            "outputBucket": target,
            "prefix": "run-1",
            "timeOut": 5,
        }
        # As Java-era clients do: the exchange, the work queue's routing key, reply_to.
        correlation_id = client.send(request, exchange="mstc.exchange", queue="mstc.queue.work")
        reply = client.wait(correlation_id, timeout=600)
    finally:
        client.close()

    assert reply["status"] == "succeeded", reply
    job_name = reply["result"].split(" ")[1]  # how Java-era clients read it
    assert job_name == reply["jobName"]
    assert read_object(s3, target, "run-1-fruit.txt.sorted") == b"apple\nfig\npear\n"
    assert read_object(s3, target, "run-1-n.txt.sorted") == b"1\n2\n3\n"
    summary = json.loads(read_object(s3, target, "run-1-summary.json"))
    assert len(summary["sorted"]) == 2
    log = read_object(s3, reply["logBucket"], reply["logObject"]).decode()
    assert reply["logObject"] == f"run-1-{job_name}.log"
    assert log.rstrip().splitlines()[-1] == "SUCCESS"


def test_mstc_run_brings_back_the_outputs(cluster: Cluster, tmp_path: Path) -> None:
    """The way users run it: `mstc run` on a directory of files, outputs land locally."""
    rabbit, minio = f"{RELEASE}-mstc-work-queue", f"{RELEASE}-minio"
    env = {
        **os.environ,
        "WORK_QUEUE_HOST": "127.0.0.1",
        "WORK_QUEUE_PORT": str(cluster.port_forward(rabbit, 5672)),
        "WORK_QUEUE_USER": cluster.secret(rabbit, "username"),
        "WORK_QUEUE_PASS": cluster.secret(rabbit, "password"),
        "MINIO_SERVICE_HOST": "127.0.0.1",
        "MINIO_SERVICE_PORT": str(cluster.port_forward(minio, 9000)),
        "MINIO_ROOT_USER": cluster.secret(minio, "rootUser"),
        "MINIO_ROOT_PASSWORD": cluster.secret(minio, "rootPassword"),
    }
    inputs = ROOT / "examples" / "demo-input"
    out = tmp_path / "out"
    done = subprocess.run(
        ["mstc", "run", "--image", JOB_IMAGE, "--job-name", "demo", "--input", str(inputs),
         "--output-dir", str(out), "--timeout", "5", "--json"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    sorted_fruit = [p for p in out.rglob("fruit.txt.sorted")]
    assert [p.read_bytes() for p in sorted_fruit] == [b"apple\nfig\npear\n"]
    logs = list(out.rglob("*.log"))
    assert logs
    assert logs[0].read_text().rstrip().splitlines()[-1] == "SUCCESS"
