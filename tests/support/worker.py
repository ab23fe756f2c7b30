"""The worker as users run it (`python -m mstc_worker`, a real process) and a client for it.

`WorkerProcess` starts the console entry point with the stack's settings, waits for its
readiness probe, and can stop it, kill it and start it again. `AmqpClient` talks to it the
way clients do: publish a JSON request with reply_to and correlation_id, wait for the reply.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from tests.support.stack import StackInfo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def queue_message_stats(
    stack: StackInfo, queue: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """RabbitMQ's own counts for `queue` (management API `message_stats`), once `until` holds.

    The broker samples them every few seconds; `until` names a count the test knows the
    final value of, so the sample read is known to cover everything before it.
    """
    user, password = stack.env["WORK_QUEUE_USER"], stack.env["WORK_QUEUE_PASS"]
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    url = f"{stack.env['MSTC_RABBITMQ_MANAGEMENT_URL']}/api/queues/%2F/{urllib.parse.quote(queue)}"
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(req, timeout=10) as resp:
            stats: dict[str, Any] = json.loads(resp.read()).get("message_stats", {})
        if until(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {queue}: counts still {stats} after {timeout} s")
        time.sleep(0.5)  # the broker publishes a new sample every few seconds; nothing to await


class WorkerProcess:
    def __init__(self, stack: StackInfo, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **stack.env,
            "MSTC_HTTP_PORT": str(self.port),
            "MSTC_HTTP_HOST": "127.0.0.1",
            **env,
        }
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log"))
        )

    def start(self, *, wait_ready: bool = True) -> None:
        self.starts += 1
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mstc_worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_text}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)  # polling the readiness probe, as Kubernetes does
        raise AssertionError(f"worker not ready within {timeout} s:\n{self.log_text}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        """The value of one sample line of /metrics (name with labels, as printed)."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class AmqpClient:
    """A client like the Java project's: an exclusive reply queue, one correlation_id a request."""

    def __init__(self, stack: StackInfo, *, durable: bool = False) -> None:
        """`durable`: a named durable reply queue that outlives a broker restart (`reconnect`)."""
        self._url = stack.amqp_url
        self._durable_queue = f"test.replies.{uuid.uuid4().hex[:12]}" if durable else None
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}  # type mstc.progress, not replies
        self.arrivals: list[tuple[str, str | None]] = []  # (correlation_id, type), in order
        self._connect()

    def _connect(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(self._url))
        self.channel = self.conn.channel()
        if self._durable_queue is None:
            self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
        else:
            self.reply_queue = self._durable_queue
            self.channel.queue_declare(self.reply_queue, durable=True)
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)

    def reconnect(self, timeout: float = 60) -> None:
        """A new connection after the broker came back (durable clients keep their replies)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connect()
                return
            except pika.exceptions.AMQPConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the broker is still starting; nothing to wait on but time

    def barrier(self, timeout: float = 30) -> None:
        """Return once every message already in the reply queue has been received.

        A marker published behind them arrives last (a queue is first in, first out), so
        a test can count replies without sleeping "long enough".
        """
        marker = f"barrier-{uuid.uuid4()}"
        props = pika.BasicProperties(correlation_id=marker)
        self.channel.basic_publish("", self.reply_queue, b"{}", props)
        self.wait(marker, timeout=timeout)
        del self.replies[marker]
        self.arrivals = [arrival for arrival in self.arrivals if arrival[0] != marker]

    def _on_reply(self, _ch: Any, _method: Any, props: pika.BasicProperties, body: bytes) -> None:
        cid = props.correlation_id or ""
        self.arrivals.append((cid, props.type))
        into = self.progress if props.type == "mstc.progress" else self.replies
        into.setdefault(cid, []).append(json.loads(body))

    def send(
        self,
        request: dict[str, Any] | bytes,
        *,
        queue: str = "mstc.queue.work",
        exchange: str = "",
        correlation_id: str | None = None,
        reply: bool = True,
        headers: dict[str, Any] | None = None,
    ) -> str:
        correlation_id = correlation_id or str(uuid.uuid4())
        body = request if isinstance(request, bytes) else json.dumps(request).encode()
        props = pika.BasicProperties(
            reply_to=self.reply_queue if reply else None,
            correlation_id=correlation_id,
            delivery_mode=2,
            headers=headers,
        )
        self.channel.basic_publish(exchange, queue, body, props)
        return correlation_id

    def wait(self, correlation_id: str, timeout: float = 90) -> dict[str, Any]:
        """Block (serving heartbeats) until the reply for `correlation_id` arrives."""
        deadline = time.monotonic() + timeout
        while not self.replies.get(correlation_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply for {correlation_id} within {timeout} s")
            self.conn.process_data_events(time_limit=0.5)
        return self.replies[correlation_id][0]

    def settle(self, seconds: float) -> None:
        """Keep receiving for a while: used to prove that no second reply arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.2)

    def close(self) -> None:
        if self.conn.is_open:
            if self._durable_queue is not None:
                self.channel.queue_delete(self._durable_queue)
            self.conn.close()
