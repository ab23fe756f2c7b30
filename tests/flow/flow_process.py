"""`mstc-flow` as its users run it, for the end-to-end tests: the installed console script with
its settings from the environment, nothing given by hand.

`RealFlow` starts the script, waits for its readiness probe (GET /readyz on its own free
port, polled as Kubernetes does), and stops it with SIGTERM or kills it with SIGKILL. Its API
is reached over real HTTP (`get`, `post`) or with the real `mstc` command (`mstc`). The
fixtures give each test its own inbox and reply queue (deleted afterwards), its own store
(an SQLite file, or a fresh schema in the stack's PostgreSQL) and its own flows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.support.pg import temporary_schema
from tests.support.processes import stopped_or_explained
from tests.support.stack import StackInfo
from tests.support.worker import free_port

FLOW = Path(sys.executable).with_name("mstc-flow")  # the console scripts of this venv
MSTC = Path(sys.executable).with_name("mstc")
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
READ_TOKEN = "e2e-read-token-0123456789abcdef"


class RealFlow:
    """One `mstc-flow` process; its log in `log_dir`."""

    def __init__(self, stack: StackInfo, env: dict[str, str], log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.env = {
            **os.environ, **stack.env,
            "MSTC_FLOW_ADMIN_TOKEN": ADMIN_TOKEN, "MSTC_FLOW_READ_TOKEN": READ_TOKEN,
            "MSTC_FLOW_HTTP_HOST": "127.0.0.1", "MSTC_FLOW_HTTP_PORT": str(self.port), **env,
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("flow-*.log"))
        )

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        log = (self.log_dir / f"flow-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([str(FLOW)], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mstc-flow exited with {self.proc.returncode}:\n"
                                     f"{self.log_text}")  # fmt: skip
            if self.get("/readyz", token=None)[0] == 200:
                return
            time.sleep(0.1)  # polling the readiness probe, as Kubernetes does
        raise AssertionError(f"mstc-flow not ready within {timeout} s:\n{self.log_text}")

    def stop(self) -> int | None:
        """SIGTERM, and its exit code (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        return stopped_or_explained(self.proc, lambda: self.log_text)

    def kill(self) -> int:
        """SIGKILL: no clean stop, nothing acked or finished on the way out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def request(self, method: str, path: str, *, token: str | None = ADMIN_TOKEN,
                body: bytes | None = None) -> tuple[int, Any]:  # fmt: skip
        """One API call: (status, the JSON or text answer); status 0 if nothing answered."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, _answer(resp.read(), resp.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return exc.code, _answer(exc.read(), exc.headers.get_content_type())
        except OSError:
            return 0, None

    def get(self, path: str, *, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        return self.request("GET", path, token=token)

    def post(self, path: str, *, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        return self.request("POST", path, token=token, body=b"")

    def poll(self, path: str, done: Callable[[Any], bool], timeout: float = 60) -> Any:
        """GET `path` (read token) until `done(answer)`; the answer. The API cannot be
        awaited, so it is asked every 0.2 s."""
        deadline = time.monotonic() + timeout
        while True:
            status, answer = self.get(path, token=READ_TOKEN)
            if status == 200 and done(answer):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"GET {path}: still {status} {answer} after {timeout} s")
            time.sleep(0.2)

    def mstc(self, *args: str, token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        """The real `mstc` command on this flow's API, with `token` as MSTC_FLOW_TOKEN."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MSTC_FLOW_URL": self.url,
               **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}}  # fmt: skip
        if token is not None:
            env["MSTC_FLOW_TOKEN"] = token
        return subprocess.run([str(MSTC), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip


def _answer(data: bytes, content_type: str) -> Any:
    return json.loads(data) if content_type == "application/json" else data.decode()


MakeRealFlow = Callable[..., RealFlow]


@pytest.fixture
def flow_queues(stack: StackInfo) -> Iterator[dict[str, str]]:
    """This test's inbox and reply queue, deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    queues = {"MSTC_FLOW_INBOX_QUEUE": f"test.e2e.inbox.{tag}",
              "MSTC_FLOW_REPLY_QUEUE": f"test.e2e.replies.{tag}"}  # fmt: skip
    yield queues
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    channel = conn.channel()
    for queue in queues.values():
        channel.queue_delete(queue)
    conn.close()


@pytest.fixture
def pg_store(stack: StackInfo) -> Iterator[str]:
    """A fresh schema in the stack's PostgreSQL (SQLAlchemy URL), dropped afterwards."""
    url = stack.env["MSTC_FLOW_TEST_PG_URL"]
    with temporary_schema(url, "e2e") as narrowed:
        yield narrowed


@pytest.fixture
def make_real_flow(
    stack: StackInfo, work_queue: str, flow_queues: dict[str, str], tmp_path: Path
) -> Iterator[MakeRealFlow]:
    """`mstc-flow` processes on this test's work queue, inbox and reply queue (store: an
    SQLite file unless MSTC_FLOW_STORE_URL is given); all stopped afterwards."""
    flows: list[RealFlow] = []
    store = f"sqlite:///{tmp_path / 'flow.sqlite3'}"

    def make(*, start: bool = True, **env: str) -> RealFlow:
        log_dir = tmp_path / f"flow-{len(flows)}"
        log_dir.mkdir()
        settings = {"MSTC_WORK_QUEUE": work_queue, "MSTC_FLOW_STORE_URL": store,
                    "MSTC_FLOW_REPLICA": f"flow-{len(flows)}", **flow_queues, **env}  # fmt: skip
        flow = RealFlow(stack, settings, log_dir)
        flows.append(flow)
        if start:
            flow.start()
        return flow

    yield make
    for flow in flows:
        if flow.proc is not None and flow.proc.poll() is None:
            flow.stop()


def start_with_worker(
    make_worker: Callable[..., Any], make_real_flow: MakeRealFlow, worker_env: dict[str, str],
    **flow_env: str,
) -> RealFlow:  # fmt: skip
    """A worker and a flow started side by side (each takes seconds to import and connect);
    returns once both are ready."""
    worker = make_worker(start=False, **worker_env)
    worker.start(wait_ready=False)
    flow = make_real_flow(**flow_env)
    worker.wait_ready()
    return flow


def inbox_consumers(stack: StackInfo, queue: str) -> int:
    """How many consumers the broker counts on `queue` (a passive declare's answer)."""
    conn = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        conn.close()
