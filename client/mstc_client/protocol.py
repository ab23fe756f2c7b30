"""The wire format, mirrored from the worker: requests out as JSON, replies in as a typed `Reply`.

The client must not import the worker, so this module restates the contract
(/work/shared/java-contract.md and the worker's README): requests use the Java field names
(`image`, `jobName`, `timeOut` in minutes, `inputBucket`/`outputBucket`/`prefix`) plus the
extensions (`env`, `resources`, `command`, `args`, `annotations`, `labels`, `backoffLimit`).

Replies come in two forms, and `parse_reply` understands both:
- this project's worker: `result` plus `status`, `jobName`, `exitCode`, `reason`, ...;
- the Java worker: only `result`. "Job <name> complete." then means a Job ran but says nothing
  of how it ended (the outcome is only in its log), so its status is `Status.UNKNOWN`;
  "Invalid request No image: <body>" is a rejection; "<ErrorClass>: <message>" an error.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "JOB_RESULT",
    "PROGRESS_HEADER",
    "PROGRESS_TYPE",
    "JobRequest",
    "Reply",
    "Resources",
    "Scratch",
    "Status",
    "parse_progress",
    "parse_reply",
]

# Progress messages: asked for with this request header, sent by the worker on the reply
# queue with this AMQP `type` (a reply has none), body {"jobName", "state", ...}.
PROGRESS_HEADER = "x-mstc-progress"
PROGRESS_TYPE = "mstc.progress"

# "Job <name> complete.": Java-era clients split on spaces and take word 2 as the Job name.
JOB_RESULT = re.compile(r"^Job (\S+) complete\.$")
_INVALID_PREFIX = "Invalid request No image: "
_ERROR_RESULT = re.compile(r"^([A-Za-z_][\w.$]*): (.*)$", re.DOTALL)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Status(StrEnum):
    """How a request ended. `UNKNOWN` is a Java worker's "Job X complete.": ran, outcome unsaid."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    ERROR = "error"
    CANCELLED = "cancelled"  # stopped on a cancel (see mstc_client.control)
    UNKNOWN = "unknown"


class Resources(BaseModel):
    """Container requests and limits as Kubernetes quantities, e.g. limits={"cpu": "2"}."""

    model_config = ConfigDict(frozen=True)

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class Scratch(BaseModel):
    """A scratch directory: an emptyDir the worker mounts at `mount_path` (absolute)."""

    model_config = ConfigDict(frozen=True, alias_generator=_camel, populate_by_name=True)

    mount_path: str
    size_limit: str | None = None  # a Kubernetes quantity, e.g. "20Gi"; None: unbounded


class JobRequest(BaseModel):
    """One request to the worker. Fields left as None are not sent (the worker's defaults apply).

    `extra` is merged into the body as is, for fields this client does not know yet.
    """

    model_config = ConfigDict(frozen=True, alias_generator=_camel, populate_by_name=True)

    image: str
    job_name: str
    input_bucket: str
    output_bucket: str | None = None
    prefix: str | None = None
    timeout_minutes: int | None = Field(default=None, serialization_alias="timeOut", ge=0)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    backoff_limit: int | None = Field(default=None, ge=0)
    # Fan-out: how many pods must succeed, how many run at once, and whether each gets an index.
    completions: int | None = Field(default=None, ge=1)
    parallelism: int | None = Field(default=None, ge=1)
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    scratch: Scratch | None = None
    extra: dict[str, Any] = Field(default_factory=dict, exclude=True)

    def to_body(self) -> dict[str, Any]:
        """The JSON object sent to the worker: camelCase, empty and absent fields left out."""
        body = _prune(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        return {**body, **self.extra}


def _prune(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without empty objects and lists, at any depth (e.g. resources.requests = {})."""
    pruned = {k: _prune(v) if isinstance(v, dict) else v for k, v in data.items()}
    return {k: v for k, v in pruned.items() if v not in ({}, [])}


class Reply(BaseModel):
    """A worker's reply. Only `result` is always there; the rest is absent from Java replies."""

    model_config = ConfigDict(
        frozen=True, alias_generator=_camel, populate_by_name=True, extra="allow"
    )

    result: str
    status: Status
    job_name: str | None = None
    namespace: str | None = None
    exit_code: int | None = None
    pods_succeeded: int | None = None
    pods_failed: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    log_bucket: str | None = None
    log_object: str | None = None
    output_bucket: str | None = None
    error: str | None = None
    java_form: bool = Field(
        default=False, description="True when the reply had only `result` (a Java-era worker)."
    )

    @property
    def explanation(self) -> str:
        """One line saying why the request ended as it did, from whatever the reply holds."""
        parts = [self.error or self.message or self.reason or ""]
        if self.exit_code not in (None, 0):
            parts.append(f"exit code {self.exit_code}")
        return "; ".join(part for part in parts if part) or self.result


def parse_progress(body: bytes) -> tuple[str, str | None] | None:
    """(state, jobName) of a progress message, or None when it cannot be read."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return None
    name = data.get("jobName")
    return data["state"], name if isinstance(name, str) else None


def parse_reply(body: bytes) -> Reply:
    """Read a reply body; never raises, because a reply that cannot be read must still end the
    wait: an unreadable body becomes a `Status.ERROR` reply that says so."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _unreadable(body, f"the reply is not JSON ({exc})")
    if not isinstance(data, dict) or not isinstance(data.get("result"), str):
        return _unreadable(body, 'the reply is not a JSON object with a "result" text')
    if data.get("status") is None:
        data = {**data, **_from_result(data["result"]), "javaForm": True}
    try:
        return Reply.model_validate(data)
    except ValidationError as exc:
        return _unreadable(body, f"the reply has unexpected fields ({exc.error_count()} errors)")


def _from_result(result: str) -> dict[str, Any]:
    """Fields a Java reply implies through its `result` text alone."""
    job = JOB_RESULT.match(result)
    if job is not None:
        return {"status": Status.UNKNOWN, "jobName": job.group(1)}
    if result.startswith(_INVALID_PREFIX):
        return {
            "status": Status.REJECTED,
            "reason": "InvalidRequest",
            "error": "The request lacks image, jobName or an input bucket.",
        }
    error = _ERROR_RESULT.match(result)
    if error is not None:
        return {"status": Status.ERROR, "reason": error.group(1), "error": error.group(2)}
    return {"status": Status.ERROR, "error": result}


def _unreadable(body: bytes, problem: str) -> Reply:
    text = body.decode("utf-8", errors="replace")
    return Reply(
        result=text,
        status=Status.ERROR,
        reason="UnreadableReply",
        error=f"{problem}; is the reply queue shared with something other than an mstc worker?",
    )
