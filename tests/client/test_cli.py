"""The `mstc` command end to end: the real console script, a real worker, the real stack.

KWOK runs no containers, so a Job cannot write outputs itself. To check that outputs come back
byte for byte, the test writes an object under the run's prefix while the Job runs, standing
for what the container would have written; the log is the worker's real upload of the Job log.
Each outcome is also checked through its exit code and the message the user sees.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client as k8s
from minio import Minio

from tests.client.conftest import MSTC, run_mstc
from tests.support.kube import watch_until
from tests.support.s3 import read_object
from tests.support.worker import WorkerProcess, free_port
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack

IMAGE = "example.invalid/job:1"


def make_inputs(root: Path) -> dict[str, bytes]:
    """A directory of files, nested, binary and empty; returns relative path -> content."""
    files = {
        "a.txt": b"3 1 2\n",
        "nested/deeper/b.bin": os.urandom(300_000),
        "nested/empty.dat": b"",
        "unicode-\u00e9.txt": "h\u00e9llo\n".encode(),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_run_a_directory_end_to_end(
    worker: WorkerProcess, client_env: dict[str, str], data_bucket: str, minio: Minio,
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    inputs = make_inputs(tmp_path / "data")
    prefix = "run-e2e"
    proc = subprocess.Popen(
        [str(MSTC), "run", "--image", IMAGE, "--job-name", "e2e", "--input", "data",
         "--output-dir", "out", "--prefix", prefix, "--timeout", "2",
         "--annotation", "mstc.test/run-for=4s", "--json"],
        env={"PATH": os.environ["PATH"], **client_env}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Once the Job exists the inputs are uploaded; while it runs, leave what it "would" write.
    watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job, lambda _k, _j: True, namespace=namespace
    )
    output = os.urandom(70_000)
    minio.put_object(data_bucket, f"{prefix}/results/out.bin", io.BytesIO(output), len(output))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)  # --json: one object, nothing else on stdout
    assert result["status"] == "succeeded"
    assert result["exitCode"] == 0
    job = result["jobName"]
    assert job.startswith("e2e-")
    # Inputs are in MinIO byte for byte, under <prefix>/<path relative to the directory>.
    assert sorted(result["inputs"]) == sorted(f"{prefix}/{name}" for name in inputs)
    for name, data in inputs.items():
        assert read_object(minio, data_bucket, f"{prefix}/{name}") == data
    # The output came back byte for byte; unchanged inputs were not downloaded again.
    out = tmp_path / "out"
    assert (out / "results" / "out.bin").read_bytes() == output
    assert result["outputs"] == [str(Path("out") / "results" / "out.bin")]
    assert not (out / "a.txt").exists()
    # The Job's log, as the worker stored it (`<prefix>-<job>.log`), is in the output dir.
    log = out / f"{prefix}-{job}.log"
    assert result["log"] == str(Path("out") / log.name)
    assert log.read_bytes() == read_object(minio, data_bucket, f"{prefix}-{job}.log")
    assert log.stat().st_size > 0
    assert result["durations"]["jobMs"] >= 3000


def test_run_without_waiting_stages_the_inputs_and_hands_the_request_to_the_worker(
    worker: WorkerProcess, client_env: dict[str, str], data_bucket: str, minio: Minio,
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    inputs = make_inputs(tmp_path / "data")
    out = run_mstc("run", "--image", IMAGE, "--job-name", "later", "--input", "data",
                   "--prefix", "run-later", "--env", "K=V", "--no-wait", "--json",
                   env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    sent = json.loads(out.stdout)
    assert (sent["status"], sent["bucket"], sent["prefix"]) == ("sent", data_bucket, "run-later")
    for name, data in inputs.items():
        assert read_object(minio, data_bucket, f"run-later/{name}") == data
    # The worker made the Job from the request as the command built it.
    job = watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _kind, job: job.metadata.name.startswith("later-"),
        namespace=namespace,
    )
    env = {var.name: var.value for var in job.spec.template.spec.containers[0].env}
    assert (env["FILE_PREFIX"], env["INPUT_BUCKET"], env["K"]) == ("run-later", data_bucket, "V")
    assert env["OUTPUT_BUCKET"] == data_bucket  # none given: the worker's default, the input's


def test_run_without_json_prints_progress_and_a_summary(
    worker: WorkerProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    make_inputs(tmp_path / "data")
    out = run_mstc("run", "--image", IMAGE, "--job-name", "plain", "--input", "data",
                   "--output-dir", "out", env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Not a terminal: plain lines, one per file, and no carriage returns.
    assert "uploaded run-" in out.stderr
    assert "waiting for the reply" in out.stderr
    assert "\r" not in out.stderr
    assert ": succeeded" in out.stdout
    assert "log      out/run-" in out.stdout


def test_the_waiting_line_shows_the_jobs_state_and_name(
    worker: WorkerProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    make_inputs(tmp_path / "data")
    out = run_mstc("run", "--image", IMAGE, "--job-name", "states", "--input", "data",
                   "--output-dir", "out", "--annotation", "mstc.test/run-for=5s",
                   env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    waiting = [line for line in out.stderr.splitlines() if line.startswith("waiting for")]
    # Not a terminal: one plain line for each state the worker reported, in order.
    states = [line.rsplit("(", 1)[1].split(":")[0] for line in waiting]
    assert states.index("accepted") < states.index("running"), waiting
    assert any("(running: states-" in line for line in waiting), waiting


def test_failed_job_exits_1_and_names_the_exit_code(
    worker: WorkerProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    out = run_mstc("run", "--image", IMAGE, "--job-name", "fails", "--output-dir", "out",
                   "--annotation", "mstc.test/exit-code=3",
                   env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "failed" in out.stderr
    assert "exit code 3" in out.stderr
    assert "Read its log" in out.stderr
    assert list((tmp_path / "out").glob("run-*-fails-*.log"))


def test_job_past_its_timeout_exits_2(
    worker: WorkerProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    out = run_mstc("run", "--image", IMAGE, "--job-name", "slow", "--output-dir", "out",
                   "--timeout", "1", "--annotation", "mstc.test/run-for=1h", "--json",
                   env=client_env, cwd=tmp_path, timeout=200)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert json.loads(out.stdout)["status"] == "timeout"
    out = run_mstc("run", "--image", IMAGE, "--job-name", "slow", "--output-dir", "out",
                   "--wait-timeout", "2", "--annotation", "mstc.test/run-for=1h",
                   env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "No reply within 2 s" in out.stderr


def test_rejected_request_exits_3_and_says_why(
    make_worker: MakeWorker, client_env: dict[str, str], tmp_path: Path
) -> None:
    make_worker(MSTC_IMAGE_ALLOW="registry.example.org/*")
    out = run_mstc("run", "--image", IMAGE, "--job-name", "nope", "--output-dir", "out",
                   env=client_env, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert "refused the request" in out.stderr
    assert "registry.example.org/*" in out.stderr


@pytest.mark.parametrize("part", ["broker", "storage"])
def test_unreachable_server_exits_4_and_says_what_to_check(
    client_env: dict[str, str], tmp_path: Path, part: str
) -> None:
    port = str(free_port())  # nothing listens there
    env = {**client_env, "MSTC_CONNECT_TIMEOUT_SECONDS": "1"}
    if part == "broker":
        env.pop("MSTC_AMQP_URL")
        env["WORK_QUEUE_PORT"] = port
        advice = "WORK_QUEUE_HOST/WORK_QUEUE_PORT"
    else:
        env["MSTC_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
        advice = "MINIO_SERVICE_HOST/MINIO_SERVICE_PORT"
    (tmp_path / "in.txt").write_text("x")
    out = run_mstc("run", "--image", IMAGE, "--job-name", "j", "--input", "in.txt",
                   "--output-dir", "out", env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert "Cannot reach" in out.stderr
    assert advice in out.stderr
    assert port in out.stderr


def test_send_a_raw_request_file(
    worker: WorkerProcess, client_env: dict[str, str], data_bucket: str, minio: Minio,
    tmp_path: Path,
) -> None:  # fmt: skip
    if not minio.bucket_exists(data_bucket):
        minio.make_bucket(data_bucket)
    request = {"image": IMAGE, "jobName": "raw", "inputBucket": data_bucket, "prefix": "r1"}
    (tmp_path / "req.json").write_text(json.dumps(request))
    out = run_mstc("send", "req.json", "--json", env=client_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["status"] == "succeeded"
    assert reply["result"] == f"Job {reply['jobName']} complete."
    out = run_mstc("send", "req.json", "--no-wait", env=client_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert " sent;" in out.stdout
