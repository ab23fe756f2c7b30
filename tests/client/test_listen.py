"""`mstc workers` and `mstc events --follow` against the real stack.

`mstc workers` hears a real worker's heartbeats. The worker's own job events come with the
events work (another branch); here the test publishes events to amq.topic in the README's
format, as the worker will, and checks what `mstc events` prints and filters.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from mstc_worker import __version__
from tests.client.conftest import MSTC, _coverage_env, run_mstc
from tests.support.stack import StackInfo
from tests.support.topics import TopicListener, wait_for_binding
from tests.worker.conftest import MakeWorker

pytestmark = pytest.mark.stack

REPLICA = socket.gethostname()


def test_workers_lists_a_running_worker(
    make_worker: MakeWorker, client_env: dict[str, str], tmp_path: Path
) -> None:
    make_worker(MSTC_REPLICA_HEARTBEAT_SECONDS="1", MSTC_CONCURRENCY="4")
    proc = run_mstc("workers", "--json", "--wait", "3", env=client_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [worker] = json.loads(proc.stdout)["workers"]
    assert worker["replica"] == REPLICA
    assert (worker["state"], worker["version"]) == ("running", __version__)
    assert (worker["inFlight"], worker["capacity"], worker["intervalSeconds"]) == (0, 4, 1)

    table = run_mstc("workers", "--wait", "3", env=client_env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["REPLICA", "VERSION", "STATE", "IN", "FLIGHT", "CAPACITY", "LAST",
                              "SEEN"]  # fmt: skip
    assert row.split()[:5] == [REPLICA, __version__, "running", "0", "4"]
    assert row.endswith("s ago)")


def test_workers_without_a_heartbeat_exits_2_and_says_so(
    client_env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_mstc("workers", "--wait", "1.5", env=client_env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "No worker heartbeat on exchange 'amq.topic' within 1.5 s" in proc.stderr


def test_a_stopping_replica_is_shown_as_stopping(
    stack: StackInfo, client_env: dict[str, str], tmp_path: Path
) -> None:
    with _Mstc("workers", "--json", "--wait", "20", env=client_env, cwd=tmp_path) as mstc:
        wait_for_binding(stack, "mstc.worker.#")
        publisher = TopicListener(stack)
        beat = {"format": 1, "replica": "r-1", "version": "9.9", "inFlight": 2, "capacity": 5,
                "startedAt": "2026-11-30T10:00:00.000Z", "intervalSeconds": 5}  # fmt: skip
        publisher.publish("mstc.worker.heartbeat.r-1", {**beat, "event": "heartbeat",
                          "at": "2026-11-30T10:00:05.000Z"}, "mstc.heartbeat")  # fmt: skip
        last = {**beat, "event": "stopping", "at": "2026-11-30T10:00:06.000Z", "extra": [1]}
        publisher.publish("mstc.worker.stopping.r-1", last, "mstc.heartbeat")
        publisher.close()
        assert mstc.wait() == 0
    [worker] = json.loads(mstc.stdout_text)["workers"]
    assert (worker["replica"], worker["state"], worker["inFlight"]) == ("r-1", "stopping", 2)


# --- mstc events ------------------------------------------------------------------------------


def _event(event: str, name: str | None, **fields: Any) -> dict[str, Any]:
    """An event body as the README describes it (what the worker publishes)."""
    request_id = "ab" * 32
    body: dict[str, Any] = {
        "format": 1, "event": event, "eventId": f"{request_id}:{event}", "requestId": request_id,
        "at": "2026-11-30T10:00:00.123Z", "replica": "r-1", "requestedName": name,
        "correlationId": "c-1", "image": "example.invalid/job:1", "labels": {},
        "jobName": f"{name or 'job'}-1a2b3c", "namespace": "mstc-dev",
        "someFutureField": {"ignored": True},
    }  # fmt: skip
    if event not in ("accepted", "running"):
        body.update(status=event, result=f"Job {event}", exitCode=0 if event == "succeeded" else 3,
                    reason=None, durationMs=2500)  # fmt: skip
    return body


def _key(event: str, word: str) -> str:
    phase = "progress" if event in ("accepted", "running") else "final"
    return f"mstc.job.{phase}.{event}.{word}"


# (routing word, body): "a.b" and "a_b" share the word a_b; only the name tells them apart.
SENT = [
    ("a_b", _event("accepted", "a_b")),
    ("a_b", _event("accepted", "a.b")),
    ("other", _event("running", "other")),
    ("a_b", _event("running", "a_b")),
    ("other", _event("failed", "other")),
    ("a_b", _event("succeeded", "a.b")),
]
END = ("a_b", {**_event("succeeded", "a_b"), "eventId": "end"})  # every filter passes it


def test_events_follow_prints_the_events_and_filters_them(
    stack: StackInfo, client_env: dict[str, str], tmp_path: Path
) -> None:
    def follow(*flags: str) -> _Mstc:
        return _Mstc("events", "--follow", "--json", *flags, env=client_env, cwd=tmp_path)

    with (
        follow() as every, follow("--final") as final, follow("--job", "a_b") as job,
        follow("--job", "a_b", "--final") as job_final,
        _Mstc("events", "--follow", env=client_env, cwd=tmp_path) as text,
    ):  # fmt: skip
        wait_for_binding(stack, "mstc.job.#", count=2)
        wait_for_binding(stack, "mstc.job.final.#")
        wait_for_binding(stack, "mstc.job.*.*.a_b")
        wait_for_binding(stack, "mstc.job.final.*.a_b")
        publisher = TopicListener(stack)
        for word, body in [*SENT, END]:
            publisher.publish(_key(body["event"], word), body, "mstc.event")
        publisher.close()
        outputs = {name: mstc.lines_until("end" if name != "text" else "a_b-1a2b3c")
                   for name, mstc in [("every", every), ("final", final), ("job", job),
                                      ("job_final", job_final), ("text", text)]}  # fmt: skip

    def ids(name: str) -> list[tuple[str, str | None]]:
        return [(body["event"], body["requestedName"]) for body in map(json.loads, outputs[name])]

    everything = [(body["event"], body["requestedName"]) for _, body in [*SENT, END]]
    assert ids("every") == everything
    assert json.loads(outputs["every"][0]) == SENT[0][1]  # the body as published, extras too
    assert ids("final") == [e for e in everything if e[0] in ("failed", "succeeded")]
    assert ids("job") == [("accepted", "a_b"), ("running", "a_b"), ("succeeded", "a_b")]
    assert ids("job_final") == [("succeeded", "a_b")]
    lines = outputs["text"]
    assert len(lines) == len(everything)
    first, failed, last = lines[0], lines[4], lines[-1]
    assert first.split() == ["2026-11-30T10:00:00.123Z", "accepted", "a_b", "a_b-1a2b3c",
                             "namespace", "mstc-dev"]  # fmt: skip
    assert failed.split("  ")[-1] == "failed, exit code 3, 2.5 s"
    assert last.split()[:4] == ["2026-11-30T10:00:00.123Z", "succeeded", "a_b", "a_b-1a2b3c"]
    assert every.returncode == 0  # Ctrl-C ends following


def test_events_without_follow_says_there_is_no_history(
    client_env: dict[str, str], tmp_path: Path
) -> None:
    proc = run_mstc("events", env=client_env, cwd=tmp_path)
    assert proc.returncode == 5
    assert "no history" in proc.stderr
    assert "--follow" in proc.stderr


class _Mstc:
    """`mstc` running in the background; its stdout read line by line; Ctrl-C on leaving."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(MSTC), *args], env={"PATH": "/usr/bin:/bin", **_coverage_env(), **env},
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout_text = ""
        self.returncode: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def lines_until(self, marker: str, timeout: float = 30) -> list[str]:
        got: list[str] = []
        while True:
            line = self._lines.get(timeout=timeout)
            assert line is not None, f"mstc ended after {got}: {self._stderr()}"
            got.append(line)
            if marker in line and (marker != "a_b-1a2b3c" or "succeeded" in line):
                return got

    def wait(self, timeout: float = 60) -> int:
        self.returncode = self.proc.wait(timeout)
        lines = []
        while (line := self._lines.get(timeout=timeout)) is not None:
            lines.append(line)
        self.stdout_text = "\n".join(lines)
        return self.returncode

    def _stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def __enter__(self) -> _Mstc:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.returncode = self.proc.wait(30)
