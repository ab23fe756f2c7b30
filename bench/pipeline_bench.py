"""The `pipeline` scenario of `make bench`: 1,000-task pipelines against the bare worker.

Owns measuring what the pipeline runner of mstc-flow adds per task. Two graphs of 1,000 KWOK
tasks (the format's upper bound) that end at once: `shallow`, 1,000 independent tasks at a
parallelism of 50; `deep`, 10 chains of 100 tasks each (parallelism 10, all a chain can use).
Each runs through a real `mstc-flow` (POST /api/v1/pipelines, the pipeline's own createdAt and
finishedAt from GET /api/v1/pipelines/{id}) and the real worker; then the same 1,000 requests
go straight to the worker through an AMQP client holding the same number in flight (shallow:
a window of 50; deep: 10 chains, each request sent when its predecessor's reply came).

Reported: both wall times and the overhead per task, (pipeline wall - bare wall) / tasks; for
the deep graph also the gap between a task's predecessor finishing and the task's Job running,
p50/p99, from the pipeline API's task times (the worker's job events). The bare run has no
such figure on a comparable clock: its replies carry the Jobs' whole-second times.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.meters import pct
from tests.flow.flow_process import RealFlow
from tests.support.worker import AmqpClient

if TYPE_CHECKING:
    from bench.bench import Bench

ENDED = ("succeeded", "failed", "cancelled")
Document = dict[str, Any]


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def shallow(name: str, tasks: int, parallelism: int) -> tuple[Document, list[list[str]]]:
    """`tasks` independent tasks; as chains for the bare run: each task a chain of one."""
    names = [f"t{i:04d}" for i in range(tasks)]
    return {"name": name, "parallelism": parallelism,
            "tasks": [{"name": t} for t in names]}, [[t] for t in names]  # fmt: skip


def deep(name: str, chains: int, length: int) -> tuple[Document, list[list[str]]]:
    """`chains` chains of `length` tasks, each task after the one before it."""
    lines = [[f"c{c:02d}-{i:03d}" for i in range(length)] for c in range(chains)]
    tasks = [{"name": t, **({"after": [line[i - 1]]} if i else {})}
             for line in lines for i, t in enumerate(line)]  # fmt: skip
    return {"name": name, "parallelism": chains, "tasks": tasks}, lines


def pipeline(bench: Bench, chains: int, length: int, parallelism: int) -> dict[str, Any]:
    """One graph both ways; `chains` x `length` tasks (length 1: independent tasks)."""
    tag = uuid.uuid4().hex[:8]
    if length == 1:
        document, lines = shallow(f"bench-shallow-{tag}", chains, parallelism)
    else:
        document, lines = deep(f"bench-deep-{tag}", chains, length)
    request = bench.request("0s")
    document["defaults"] = {"image": request["image"], "annotations": request["annotations"]}
    with bench.worker() as (_proc, namespace, queue):
        done = through_flow(bench, namespace, queue, document)
        client = AmqpClient(bench.stack)
        try:
            bare_wall, replies = through_client(client, queue, request, lines,
                                                parallelism)  # fmt: skip
        finally:
            client.conn.close()
    wall = when(done["finishedAt"]) - when(done["createdAt"])
    tasks = len(document["tasks"])
    row: dict[str, Any] = {
        "tasks": tasks, "parallelism": parallelism, "state": done["state"],
        "pipeline_wall_s": round(wall, 1), "bare_wall_s": round(bare_wall, 1),
        "overhead_per_task_ms": round((wall - bare_wall) / tasks * 1000, 1),
    }  # fmt: skip
    if length > 1:
        by_name = {t["name"]: t for t in done["tasks"]}
        row |= gaps("pipeline", lines, lambda t: by_name[t])
    if len(replies) != tasks:
        raise RuntimeError(f"bare run: {len(replies)} replies for {tasks} tasks")
    return row


def gaps(label: str, lines: list[list[str]], times: Callable[[str], Any]) -> dict[str, float]:
    """p50/p99 of predecessor's finishedAt -> task's startedAt, in ms, over every chain link."""
    values = [(when(times(b)["startedAt"]) - when(times(a)["finishedAt"])) * 1000
              for line in lines for a, b in itertools.pairwise(line)]  # fmt: skip
    return {
        f"{label}_gap_p50_ms": round(pct(values, 50)),
        f"{label}_gap_p99_ms": round(pct(values, 99)),
    }


def through_flow(bench: Bench, namespace: str, queue: str, document: Document) -> Document:
    """POST the pipeline to a fresh mstc-flow on `queue`; its final GET answer."""
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="mstc-bench-pipe-") as tmp:
        env = {"MSTC_WORK_QUEUE": queue, "MSTC_NAMESPACE": namespace,
               "MSTC_BUCKET": bench.bucket, "MSTC_FLOW_REPLICA": f"bench-{tag}",
               "MSTC_FLOW_STORE_URL": f"sqlite:///{Path(tmp) / 'flow.sqlite3'}",
               "MSTC_FLOW_INBOX_QUEUE": f"bench.pipe.inbox.{tag}",
               "MSTC_FLOW_REPLY_QUEUE": f"bench.pipe.replies.{tag}"}  # fmt: skip
        logs = Path(tmp) / "logs"
        logs.mkdir()
        flow = RealFlow(bench.stack, env, logs)
        flow.start(timeout=120)
        try:
            status, created = flow.request("POST", "/api/v1/pipelines",
                                           body=json.dumps(document).encode())  # fmt: skip
            if status != 201:
                raise RuntimeError(f"pipeline refused: {status} {created}")
            path = f"/api/v1/pipelines/{created['id']}"
            answer: Document = flow.poll(path, lambda p: p["state"] in ENDED, timeout=3600)
        finally:
            flow.stop()
        return answer


def through_client(client: AmqpClient, queue: str, request: dict[str, Any],
                   lines: list[list[str]], in_flight: int,
                   ) -> tuple[float, dict[str, dict[str, Any]]]:  # fmt: skip
    """Every task of `lines` as a plain request, each after its predecessor's reply, at most
    `in_flight` at once (the pipeline's parallelism); wall time and the reply of each task."""
    ready = [line[0] for line in lines]
    after = {a: b for line in lines for a, b in itertools.pairwise(line)}
    sent: dict[str, str] = {}  # correlation id -> task
    replies: dict[str, dict[str, Any]] = {}
    total = sum(len(line) for line in lines)
    started = time.monotonic()
    while len(replies) < total:
        while ready and len(sent) < in_flight:
            task = ready.pop(0)
            sent[client.send(request, queue=queue)] = task
        # Wait for replies: the connection's own event loop, until something arrives.
        client.conn.process_data_events(time_limit=1)
        for cid in [c for c in sent if c in client.replies]:
            task = sent.pop(cid)
            replies[task] = client.replies[cid][0]
            if task in after:
                ready.append(after[task])
        if time.monotonic() - started > 3600:
            raise RuntimeError(f"bare run: {len(replies)} of {total} replies after an hour")
    return time.monotonic() - started, replies
