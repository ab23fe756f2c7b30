"""The flow API over real HTTP, for the API's and the `mstc jobs|catalog` commands' tests.

`FakePorts` is a pure in-memory `FlowPorts`: it stands for the service's engine and store
(their own tests use the real ones); the HTTP boundary is real, uvicorn on 127.0.0.1 with a
port from the system. It records the writes it was asked for so tests can check them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from mstc_flow.api import ApiServer, JobQuery, JobRecord, create_app, serve
from mstc_flow.errors import BadQuery, NotFound, PermanentError
from mstc_flow.settings import FlowSettings, load_settings

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# The one open flag the fake holds: the first sample job is pending.
FAKE_FLAG: dict[str, Any] = {
    "kind": "pending", "subject": "a" * 64, "since": "2026-11-30T12:00:00.000Z",
    "detail": "accepted, without a running pod after 300 s",
    "raisedAt": "2026-11-30T12:05:00.000Z", "clearedAt": None,
}  # fmt: skip


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _record_json(record: Any) -> dict[str, Any]:
    return {
        _camel(f.name): _json_value(getattr(record, f.name)) for f in dataclasses.fields(record)
    }


@dataclass(frozen=True)
class FakeJob:
    """The shared plan's JobRecord fields, with its `.to_json()`."""

    request_id: str
    requested_name: str | None
    job_name: str | None
    namespace: str | None = "mstc-dev"
    image: str | None = "busybox:1"
    state: str = "succeeded"
    request: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    correlation_id: str | None = None
    replica: str | None = "worker-0"
    accepted_at: datetime | None = T0
    running_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    error: str | None = None
    log_bucket: str | None = "mstc"
    log_object: str | None = None
    output_bucket: str | None = None
    pods_succeeded: int | None = None
    pods_failed: int | None = None
    duration_ms: int | None = None
    updated_at: datetime | None = T0

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


@dataclass(frozen=True)
class FakePage:
    items: list[FakeJob]
    next_cursor: str | None


@dataclass(frozen=True)
class FakeReplica:
    replica: str
    version: str | None = "0.1.0"
    in_flight: int | None = 1
    capacity: int | None = 100
    started_at: datetime | None = T0
    last_seen: datetime | None = T0
    stopping: bool = False
    interval_seconds: float | None = 5.0

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


def sample_jobs() -> list[FakeJob]:
    """Five jobs, newest first: two succeeded, a failed one, a running one, a rejected one."""
    rows = [
        ("a" * 64, "sort", "sort-1", "succeeded", {"team": "x"}, 0),
        ("b" * 64, "sort", "sort-2", "failed", {"team": "x"}, 1),
        ("c" * 64, "render", "render-1", "running", {"team": "y"}, None),
        ("d" * 64, "render", "render-2", "succeeded", {}, 0),
        ("e" * 64, "bad", None, "rejected", {}, None),
    ]
    return [
        FakeJob(request_id=rid, requested_name=name, job_name=made, state=state, labels=labels,
                exit_code=code, accepted_at=T0 - timedelta(minutes=n),
                log_object=f"logs/{made}.log" if made else None)
        for n, (rid, name, made, state, labels, code) in enumerate(rows)
    ]  # fmt: skip


PIPELINE_ID = "p-000000000001"
PIPELINE_TASK_STATES = ("waiting", "queued", "running", "succeeded", "failed", "skipped",
                        "cancelled")  # fmt: skip


class FakePorts:
    """In-memory FlowPorts; `fail_next` makes the next call raise the given error."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to the sample data, nothing recorded (a module's server serves many tests)."""
        self.jobs = sample_jobs()
        self.logs = {"a" * 64: b"hello from sort-1\n", "b" * 64: b"exit 1\n\xff raw byte\n"}
        self.entries = ["ingest", "process"]
        self.fired: list[tuple[str, bytes]] = []
        self.retried: list[str] = []
        self.cancelled: list[str] = []
        self.pipeline_writes: list[tuple[str, str]] = []
        self.purges = 0
        self.queries: list[JobQuery] = []
        self.is_ready = True
        self.fail_next: Exception | None = None
        self._lock = threading.Lock()

    def _maybe_fail(self) -> None:
        with self._lock:
            error, self.fail_next = self.fail_next, None
        if error is not None:
            raise error

    def list_jobs(self, query: JobQuery) -> FakePage:
        self._maybe_fail()
        self.queries.append(query)
        start = 0
        if query.cursor is not None:  # "p<offset>", as this fake makes them
            if not (query.cursor.startswith("p") and query.cursor[1:].isdigit()):
                raise BadQuery("query parameter 'cursor': not a cursor this service made")
            start = int(query.cursor[1:])
        rows = [j for j in self.jobs if query.state in (None, j.state)]
        rows = [j for j in rows if query.name in (None, j.requested_name, j.job_name)]
        end = start + query.limit
        return FakePage(rows[start:end], f"p{end}" if end < len(rows) else None)

    def get_job(self, key: str) -> FakeJob:
        self._maybe_fail()
        for job in self.jobs:
            if key in (job.request_id, job.job_name):
                return job
        raise NotFound(f"No job {key!r} in the history.")

    def job_events(self, request_id: str) -> list[dict[str, Any]]:
        return [{"eventId": f"{request_id}:accepted", "event": "accepted"},
                {"eventId": f"{request_id}:succeeded", "event": "succeeded"}]  # fmt: skip

    def job_firing(self, request_id: str) -> dict[str, Any] | None:
        if request_id != "a" * 64:
            return None
        return {"entry": "ingest", "kind": "trigger", "retryOf": None}

    def read_log(self, job: JobRecord) -> bytes:
        try:
            return self.logs[job.request_id]
        except KeyError:
            raise NotFound(f"No log is stored for {job.job_name or job.request_id}.") from None

    def retry(self, key: str) -> dict[str, Any]:
        self._maybe_fail()
        job = self.get_job(key)
        if job.state not in ("failed", "succeeded", "timeout", "error", "cancelled"):
            raise PermanentError(f"{key} is still {job.state}; retry it once it has ended.")
        self.retried.append(key)
        return {"firingId": "f" * 32, "retryOf": job.request_id}

    def cancel(self, key: str) -> dict[str, Any]:
        self._maybe_fail()
        job = self.get_job(key)
        self.cancelled.append(key)
        if job.state == "running":
            return {"status": "cancelling", "message": f"Cancelling {job.job_name}."}
        return {"status": "finished", "message": f"{job.job_name} had finished: {job.state}."}

    def catalog(self) -> dict[str, Any]:
        self._maybe_fail()
        return {"source": "file:catalog.yaml", "digest": "0" * 64, "loadedAt": T0.isoformat(),
                "error": None,
                "entries": [{"name": "ingest", "trigger": "data/in/+", "image": "busybox:1",
                             "concurrency": "allow", "maxInFlight": 0},
                            {"name": "process", "trigger": None, "image": "busybox:1",
                             "concurrency": "skip", "maxInFlight": 2}]}  # fmt: skip

    def fire(self, entry: str, payload: bytes) -> dict[str, Any]:
        self._maybe_fail()
        if entry not in self.entries:
            raise NotFound(f"The catalog has no entry {entry!r}.")
        self.fired.append((entry, payload))
        return {"firingId": "1" * 32}

    def state_counts(self, since: datetime | None = None) -> dict[str, int]:
        rows = [j for j in self.jobs if since is None or (j.accepted_at or T0) >= since]
        counts: dict[str, int] = {}
        for job in rows:
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def finished_per_minute(self, now: datetime, minutes: int) -> list[int]:
        return [0] * (minutes - 1) + [2]

    def outputs(self, job: JobRecord) -> list[dict[str, Any]]:
        return [{"name": name, "size": len(data)} for name, data in self.objects(job).items()]

    def read_output(self, job: JobRecord, name: str) -> bytes:
        try:
            return self.objects(job)[name]
        except KeyError:
            raise NotFound(f"{name!r} is not an output of {job.job_name}.") from None

    def objects(self, job: JobRecord) -> dict[str, bytes]:
        """sort-1 has one output object besides its log."""
        return {"sort-1-result.csv": b"a,b\n1,2\n"} if job.job_name == "sort-1" else {}

    def last_firings(self, entries: Any) -> dict[str, dict[str, Any]]:
        return {"ingest": {"firingId": "3" * 32, "entry": "ingest", "state": "submitted",
                           "requestId": "a" * 64, "jobState": "succeeded",
                           "createdAt": T0.isoformat()}} if "ingest" in entries else {}  # fmt: skip

    def parked(self) -> list[dict[str, Any]]:
        return [{"firingId": "2" * 32, "entry": "ingest", "lastError": "broker down"}]

    def queue_status(self) -> dict[str, Any]:
        self._maybe_fail()
        return {"workQueue": "mstc.queue.work", "ready": 3, "consumers": 1, "workersInFlight": 1,
                "pendingFirings": 0, "pipelineTasks": None}  # fmt: skip

    def purge_queue(self) -> dict[str, Any]:
        self._maybe_fail()
        self.purges += 1
        return {"purged": 3, "firings": ["3" * 32], "pipelineTasks": [], "others": 2,
                "replied": 1, "kept": 0}  # fmt: skip

    def replicas(self) -> list[FakeReplica]:
        return [FakeReplica("worker-0"), FakeReplica("worker-1", stopping=True, in_flight=0)]

    def flags(self) -> list[dict[str, Any]]:
        return [FAKE_FLAG]

    def job_flags(self, request_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return {rid: [FAKE_FLAG] for rid in request_ids if rid == FAKE_FLAG["subject"]}

    def ready(self) -> bool:
        self._maybe_fail()
        return self.is_ready

    # Pipelines: their behaviour is tested against the real runner (tests/flow/test_pipeline_*);
    # here one pipeline, PIPELINE_ID (three stages, one task failed, one skipped after it),
    # for the routes' tokens, the pages and the documentation.
    def create_pipeline(self, data: bytes, fmt: str) -> dict[str, Any]:
        self._maybe_fail()
        return {"id": PIPELINE_ID, "name": "demo", "tasks": 1, "stages": 1}

    def list_pipelines(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        summary = {key: value for key, value in fake_pipeline().items() if key != "tasks"}
        return [summary][:limit] if state in (None, summary["state"]) else []

    def get_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        self._maybe_fail()
        if pipeline_id != PIPELINE_ID:
            raise NotFound(f"There is no pipeline {pipeline_id}.")
        return fake_pipeline()

    def retry_pipeline(self, pipeline_id: str, task: str | None) -> dict[str, Any]:
        found = self.get_pipeline(pipeline_id)["id"]
        self.pipeline_writes.append(("retry", pipeline_id))
        return {"id": found, "retried": ["sort-b", "merge"]}

    def cancel_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        found = self.get_pipeline(pipeline_id)
        self.pipeline_writes.append(("cancel", pipeline_id))
        return {**found, "state": "cancelled"}


def fake_pipeline() -> dict[str, Any]:
    """split -> sort-a, sort-b -> merge; sort-b failed, so merge was skipped."""
    tasks = [
        ("split", "succeeded", []),
        ("sort-a", "succeeded", ["split"]),
        ("sort-b", "failed", ["split"]),
        ("merge", "skipped", ["sort-a", "sort-b"]),
    ]
    counts = dict.fromkeys(PIPELINE_TASK_STATES, 0)
    for _name, state, _needs in tasks:
        counts[state] += 1
    return {
        "id": PIPELINE_ID, "name": "demo", "state": "failed", "reason": "failed: sort-b",
        "createdAt": "2026-11-30T12:00:00+00:00", "finishedAt": "2026-11-30T12:01:00+00:00",
        "parallelism": 4, "bucket": "mstc", "prefix": "demo", "counts": counts,
        "tasks": [{"name": name, "state": state, "attempts": 1, "jobName": f"{name}-x1",
                   "startedAt": None, "finishedAt": None, "needs": needs,
                   "reason": "exit code 1" if state == "failed" else None}
                  for name, state, needs in tasks],
    }  # fmt: skip


def api_settings(*, read_token: str | None = READ_TOKEN) -> FlowSettings:
    env = {"MSTC_FLOW_ADMIN_TOKEN": ADMIN_TOKEN, "MSTC_FLOW_HTTP_HOST": "127.0.0.1",
           "MSTC_FLOW_HTTP_PORT": "0"}  # fmt: skip
    if read_token is not None:
        env["MSTC_FLOW_READ_TOKEN"] = read_token
    return load_settings(env)


@contextmanager
def running_api(ports: FakePorts, settings: FlowSettings | None = None) -> Iterator[str]:
    """The API on a free port of 127.0.0.1; yields its base URL; stops it after."""
    settings = settings or api_settings()
    stop = threading.Event()
    server: ApiServer = serve(create_app(ports, settings, CollectorRegistry()), settings, stop)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        stop.set()
        assert server.join(10), "the API did not stop within 10 s of its stop event"
