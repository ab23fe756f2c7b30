"""TLS to RabbitMQ and MinIO, verified against a private CA (MSTC_TLS_CA_FILE).

RabbitMQ is the stack's own, on its TLS listener; MinIO is a second, TLS-only server this
test starts from the stack's binary. Both present a certificate signed by the stack's CA,
which no system store trusts: without MSTC_TLS_CA_FILE the worker must refuse them and say
why, with it the whole request goes over TLS.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio import Minio

import localstack
from tests.faults.report import FaultRecord
from tests.support.stack import StackInfo
from tests.support.worker import AmqpClient, free_port
from tests.worker.conftest import MakeWorker
from tests.worker.test_service import request

pytestmark = pytest.mark.stack


@pytest.fixture
def cfg(stack: StackInfo) -> localstack.Config:
    if stack.kind != "local" or "MSTC_STACK_AMQPS_URL" not in stack.env:
        pytest.skip("needs the local stack's TLS listener and CA")
    return localstack.Config.from_env()


@pytest.fixture
def tls_minio(cfg: localstack.Config, stack: StackInfo, tmp_path: Path) -> Iterator[str]:
    """A TLS-only MinIO on a free port, with a certificate signed by the stack's CA."""
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(cfg.pki / "services.crt", certs / "public.crt")
    shutil.copy(cfg.pki / "services.key", certs / "private.key")
    port, data = free_port(), tmp_path / "data"
    data.mkdir()
    user, password = stack.s3_keys
    proc = subprocess.Popen(
        [str(localstack.binary(cfg, "minio", "minio")), "server", "--quiet",
         "--certs-dir", str(certs), "--address", f"127.0.0.1:{port}",
         "--console-address", f"127.0.0.1:{free_port()}", str(data)],
        env={"MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password, "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=stack.env["MSTC_STACK_CA_FILE"])
    try:
        localstack.wait_for(
            "TLS MinIO",
            lambda: _ready(f"{url}/minio/health/ready", context),
            60,
            cfg,
            "minio",
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ready(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _wait_log(text: str, log: Callable[[], str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = log()
        if text in current:
            return current
        time.sleep(0.2)  # polling a log file with a deadline: there is no event to wait on
    raise AssertionError(f"never logged {text!r}:\n{log()[-3000:]}")


def test_a_request_goes_over_tls_to_rabbitmq_and_minio(
    stack: StackInfo, tls_minio: str, make_worker: MakeWorker, client: AmqpClient,
    work_queue: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "RabbitMQ and MinIO reached over TLS, certificates from a private CA"
    fault.expected = "verified with MSTC_TLS_CA_FILE; the request runs and its log is stored"
    ca = stack.env["MSTC_STACK_CA_FILE"]
    make_worker(
        MSTC_AMQP_URL=stack.env["MSTC_STACK_AMQPS_URL"], MSTC_S3_ENDPOINT=tls_minio,
        MSTC_TLS_CA_FILE=ca,
    )  # fmt: skip
    reply = client.wait(client.send(request("tls-bucket"), queue=work_queue), timeout=120)
    assert reply["status"] == "succeeded", reply
    assert reply["logObject"], reply
    user, password = stack.s3_keys
    s3 = Minio(
        tls_minio.removeprefix("https://"), access_key=user, secret_key=password, secure=True,
        http_client=urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca),
    )  # fmt: skip
    log_text = s3.get_object("tls-bucket", reply["logObject"]).read()
    # The worker's own broker connection is a TLS one, says RabbitMQ (whose list of
    # connections lags a few seconds behind: polled, with a deadline).
    deadline = time.monotonic() + 30
    while not (tls_conns := [c for c in _worker_connections(stack) if c.get("ssl")]):
        assert time.monotonic() < deadline, _worker_connections(stack)
        time.sleep(0.5)
    fault.saw(
        f"reply {reply['status']}; log ({len(log_text)} bytes) read back from the TLS MinIO; "
        f"RabbitMQ reports the worker's connection as TLS ({tls_conns[0]['ssl_protocol']})"
    )


def _worker_connections(stack: StackInfo) -> list[dict[str, Any]]:
    """The worker's AMQP connections as RabbitMQ's management API lists them."""
    mgmt = urllib.request.Request(
        f"{stack.env['MSTC_RABBITMQ_MANAGEMENT_URL']}/api/connections",
        headers={"Authorization": "Basic " + _basic(stack)},
    )
    with urllib.request.urlopen(mgmt, timeout=10) as resp:
        connections: list[dict[str, Any]] = json.loads(resp.read())
    return [
        c for c in connections
        if c.get("client_properties", {}).get("connection_name") == "mstc-worker"
    ]  # fmt: skip


def _basic(stack: StackInfo) -> str:
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_untrusted_certificate_is_refused_and_said_so(
    stack: StackInfo, tls_minio: str, make_worker: MakeWorker, client: AmqpClient,
    work_queue: str, fault: FaultRecord,
) -> None:  # fmt: skip
    fault.fault = "RabbitMQ and MinIO over TLS, but the worker not given the CA that signed them"
    fault.expected = (
        "no connection made; the broker failure logged with the verification problem, the "
        "worker not ready; MinIO's refusal in the reply's error (the Job's own key cannot be "
        "made, so it never runs); no hang"
    )
    broker_side = make_worker(MSTC_AMQP_URL=stack.env["MSTC_STACK_AMQPS_URL"], start=False)
    broker_side.start(wait_ready=False)
    text = _wait_log("broker unavailable", lambda: broker_side.log_text)
    assert "certificate verify failed" in text, text
    assert "MSTC_TLS_CA_FILE" in text
    ready, _ = broker_side.get("/readyz")
    assert ready == 503
    broker_side.stop()

    # Plain AMQP, TLS MinIO without the CA: the Job's own MinIO key cannot be made (MinIO's
    # STS is behind the same certificate), so the Job never runs and the reply says why.
    make_worker(MSTC_S3_ENDPOINT=tls_minio)
    started = time.monotonic()
    reply = client.wait(client.send(request("tls-bucket"), queue=work_queue), timeout=120)
    took = time.monotonic() - started
    assert reply["status"] == "error", reply
    assert "temporary MinIO credentials" in reply["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in reply["error"]
    fault.saw(
        f"broker: 'certificate verify failed' logged, /readyz {ready}; MinIO: reply "
        f"({reply['status']}) in {took:.0f} s with error '{reply['error'][:80]}...'"
    )
