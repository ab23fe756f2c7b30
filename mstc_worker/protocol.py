"""The wire protocol: bytes in, a validated `Request` or a precise rejection out; replies back.

This module owns what a client sees. Parsing accepts everything the Java worker
accepted (unknown fields are ignored, both bucket forms work) and refuses, with a
`RequestRejected` naming the field and the fix, what would only fail later on the
cluster. Replies keep the Java worker's `result` text to the letter, because
Java-era clients split it on spaces to find the Job's name; the structured fields
beside it tell the real outcome.

Field-level checks of the optional extensions live in `mstc_worker.request_fields`;
this module holds the models, the body-level checks and the required fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

from mstc_worker import request_fields as fields
from mstc_worker.errors import ImageNotAllowed, InvalidRequest, MalformedRequest, RequestRejected
from mstc_worker.request_fields import RESERVED_ENV_NAMES, FanOut, Resources, Scratch, describe
from mstc_worker.settings import Settings

__all__ = [
    "INVALID_REQUEST_PREFIX",
    "PROGRESS_HEADER",
    "PROGRESS_TYPE",
    "RESERVED_ENV_NAMES",
    "FanOut",
    "Outcome",
    "Reply",
    "Request",
    "Resources",
    "Status",
    "error_outcome",
    "error_result",
    "job_result",
    "parse_request",
    "progress_body",
    "rejection_reply",
    "reply_body",
    "reply_for",
    "wants_progress",
]

# The Java worker's text for a request without image, jobName or input bucket; it
# said "No image" whichever of the three was missing, and clients may match on it.
INVALID_REQUEST_PREFIX = "Invalid request No image: "


class Request(BaseModel):
    """A validated request: every field already checked, defaults resolved."""

    model_config = ConfigDict(frozen=True)

    image: str
    job_name: str = Field(description="jobName exactly as sent; sanitised only in the manifest.")
    timeout_minutes: int = Field(description="Resolved timeout: the settings' default for 0.")
    input_bucket: str = Field(description="Input bucket name, from inputBucket or the URL path.")
    output_bucket: str = Field(description="Output bucket name; the input bucket by default.")
    input_bucket_url: str | None = None
    output_bucket_url: str | None = Field(default=None, description="Defaults to the input URL.")
    prefix: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    backoff_limit: int = 0
    fan_out: FanOut = Field(default_factory=FanOut, description="Pods: one unless asked.")
    task_queue: str | None = Field(default=None, description="taskQueue: the pods' task queue.")
    scratch: Scratch | None = Field(default=None, description="An emptyDir for the container.")


def parse_request(body: bytes, *, settings: Settings) -> Request:
    """Turn a message body into a Request, or raise RequestRejected saying what to fix.

    Checks run in this order, and the first problem found is the one reported:
    the body as a whole, then the three fields the Java worker required (image,
    jobName, an input bucket), then every other field.
    """
    data = _json_object(body, settings.max_body_bytes)
    image = _required_text(data, "image", '"image": "python:3.12"')
    job_name = _required_text(data, "jobName", '"jobName": "my-analysis"')
    buckets = fields.buckets(data)
    _check_buckets(buckets, settings)
    _check_image(image, settings)
    timeout = fields.java_int(
        data,
        "timeOut",
        high=settings.max_timeout_minutes,
        meaning=(
            f"a whole number of minutes from 0 to {settings.max_timeout_minutes} "
            f"(0 or absent means the default of {settings.default_timeout_minutes})"
        ),
    )
    backoff = fields.whole_number(
        data, "backoffLimit", high=10, meaning="a whole number of retries from 0 to 10"
    )
    return Request(
        image=image,
        job_name=job_name,
        timeout_minutes=timeout or settings.default_timeout_minutes,
        input_bucket=buckets.input_bucket,
        output_bucket=buckets.output_bucket,
        input_bucket_url=buckets.input_url,
        output_bucket_url=buckets.output_url,
        prefix=fields.prefix(data),
        env=fields.extra_env(data),
        resources=fields.resources(data),
        command=fields.string_list(data, "command"),
        args=fields.string_list(data, "args"),
        annotations=fields.pod_annotations(
            data,
            fields.KeyAllowList(settings.annotation_prefixes, "MSTC_REQUEST_ANNOTATION_PREFIXES"),
        ),
        labels=fields.extra_labels(
            data, fields.KeyAllowList(settings.label_prefixes, "MSTC_REQUEST_LABEL_PREFIXES")
        ),
        backoff_limit=backoff or 0,
        fan_out=fields.fan_out(
            data,
            max_parallelism=settings.max_parallelism,
            max_completions=settings.max_completions,
        ),
        task_queue=fields.task_queue(data, enabled=settings.task_queues),
        scratch=fields.scratch(data),
    )


def _json_object(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise MalformedRequest(
            f"The request body is {len(body)} bytes, over the limit of {limit} bytes; "
            "put large inputs in the input bucket instead."
        )
    if not body.strip():
        raise MalformedRequest("The request body is empty; send a JSON object.")
    try:
        # utf-8-sig: a leading byte-order mark is harmless, and Jackson accepted it.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(
            f"The request body is not UTF-8 text (byte {exc.start} is invalid); "
            "send JSON encoded as UTF-8."
        ) from exc
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}."
        ) from exc
    except _NotJsonError as exc:
        raise MalformedRequest(f"The request body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:
        raise MalformedRequest("The request body is JSON nested too deeply to read.") from exc
    except ValueError as exc:
        # Python refuses integers of over 4,300 digits (a guard against slow conversions).
        raise MalformedRequest(
            "The request body holds a number too long to read; send numbers of at most 4300 digits."
        ) from exc
    if not isinstance(data, dict):
        raise MalformedRequest(
            "The request body must be a JSON object such as "
            '{"image": "...", "jobName": "...", "inputBucket": "..."}; '
            f"got {describe(data)}."
        )
    return data


class _NotJsonError(ValueError):
    """Something Python's json module reads although it is not JSON."""


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON: another worker
    # (or the Java one) would refuse the same body.
    raise _NotJsonError(f"{name} is not a JSON value")


def _required_text(data: dict[str, Any], field: str, example: str) -> str:
    value = data.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        state = "missing" if value is None else "empty"
        raise InvalidRequest(
            f"Field '{field}' is {state}; it is required, e.g. {example}.", field=field
        )
    if not isinstance(value, str):
        raise RequestRejected(
            f"Field '{field}' must be a string, e.g. {example}; got {describe(value)}.", field=field
        )
    return value


def _check_buckets(buckets: fields.Buckets, settings: Settings) -> None:
    """Refuse the worker's own bucket: a Job's credentials must never reach its records."""
    own = settings.reply_records_bucket
    for field, name in (
        ("inputBucket", buckets.input_bucket),
        ("outputBucket", buckets.output_bucket),
    ):
        if name == own:
            raise RequestRejected(
                f"Bucket '{own}' is the worker's own (MSTC_REPLY_RECORDS_BUCKET) and may not "
                "be used by a request; use another bucket.",
                field=field,
            )


def _check_image(image: str, settings: Settings) -> None:
    if any(char.isspace() or not char.isprintable() for char in image):
        raise RequestRejected(
            f"Field 'image' must not contain spaces or control characters; got {describe(image)}.",
            field="image",
        )
    if not settings.image_allowed(image):
        patterns = ", ".join(f"'{pattern}'" for pattern in settings.image_patterns)
        raise ImageNotAllowed(
            f"Image {describe(image, bare=True)} is not allowed by this worker; "
            f"allowed image patterns: {patterns}.",
            field="image",
        )


class Status(StrEnum):
    """How a request ended, as the reply's `status` field says it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    ERROR = "error"
    CANCELLED = "cancelled"


# A Job that ran has one of these statuses; the others may come with or without a Job.
_JOB_STATUSES = {Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.CANCELLED}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Outcome(BaseModel):
    """The facts of how one request ended, as the runner found them.

    `job_name` is set exactly when a Job was created, because that is what decides
    the Java `result` text: any created Job gets "Job <name> complete.".
    """

    model_config = ConfigDict(frozen=True, alias_generator=_camel, populate_by_name=True)

    status: Status
    job_name: str | None = None
    namespace: str | None = None
    exit_code: int | None = None
    pods_succeeded: int | None = Field(
        default=None, description="Pods of the Job that succeeded (the Job controller's count)."
    )
    pods_failed: int | None = Field(
        default=None, description="Pods of the Job that failed, retries included."
    )
    reason: str | None = Field(
        default=None, description="A CamelCase cause, e.g. ImagePullBackOff."
    )
    message: str | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    log_bucket: str | None = None
    log_object: str | None = None
    output_bucket: str | None = None
    error: str | None = Field(default=None, description="A sentence saying what went wrong.")
    error_type: str | None = Field(
        default=None, exclude=True, description="Class name for `result`."
    )

    @model_validator(mode="after")
    def _job_status_needs_job(self) -> Outcome:
        if self.status in _JOB_STATUSES and self.job_name is None:
            raise ValueError(f"status {self.status.value!r} needs the name of the Job that ran")
        return self

    @field_serializer("started_at", "finished_at", when_used="json")
    def _utc(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reply(Outcome):
    """The reply body: the Java `result` text plus the outcome's fields."""

    result: str
    duration_ms: int | None = None


def job_result(job_name: str) -> str:
    """The Java text for a request that got a Job, whatever became of it."""
    return f"Job {job_name} complete."


def error_result(error_type: str, message: str) -> str:
    """The Java text for a failure: ``<ErrorClassName>: <message>``.

    An exception without a message is named by its class alone (error_outcome
    fills the message with the class name, which must not appear twice).
    """
    return f"{error_type}: {message}" if message and message != error_type else error_type


def error_outcome(
    exc: BaseException, *, job_name: str | None = None, namespace: str | None = None
) -> Outcome:
    """An `error` outcome for an exception; pass `job_name` only if the Job was created."""
    name = type(exc).__name__
    return Outcome(
        status=Status.ERROR,
        job_name=job_name,
        namespace=namespace,
        reason=name,
        error=str(exc) or name,
        error_type=name,
    )


def reply_for(outcome: Outcome) -> Reply:
    """The reply for an outcome, with its Java `result` text and duration."""
    if outcome.job_name is not None:
        result = job_result(outcome.job_name)
    else:
        result = error_result(outcome.error_type or "Error", outcome.error or "")
    duration = None
    if outcome.started_at is not None and outcome.finished_at is not None:
        duration = round((outcome.finished_at - outcome.started_at).total_seconds() * 1000)
    # dict(outcome), not model_dump(): it keeps error_type, which dumping leaves out.
    return Reply(**dict(outcome), result=result, duration_ms=duration)


def rejection_reply(exc: RequestRejected, body: bytes) -> Reply:
    """The reply to a rejected request; `body` is the raw message, echoed as Java did."""
    name = type(exc).__name__
    if isinstance(exc, InvalidRequest):
        result = INVALID_REQUEST_PREFIX + body.decode("utf-8", errors="replace")
    else:
        result = error_result(name, str(exc))
    return Reply(
        status=Status.REJECTED, reason=name, error=str(exc), error_type=name, result=result
    )


PROGRESS_TYPE = "mstc.progress"  # the AMQP `type` of progress messages; replies have none
PROGRESS_HEADER = "x-mstc-progress"  # a request header that asks for them


def wants_progress(headers: Mapping[str, object]) -> bool:
    """Whether a request's headers ask for progress messages (any truthy value)."""
    value = headers.get(PROGRESS_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def progress_body(job_name: str, state: str, namespace: str) -> bytes:
    """A progress message: the Job's name and where it stands. Never the final reply."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = {"jobName": job_name, "state": state, "namespace": namespace, "at": at}
    return json.dumps(data).encode("utf-8")


def reply_body(reply: Reply) -> bytes:
    """The reply as JSON bytes: camelCase names, absent values left out, `result` first."""
    data = reply.model_dump(mode="json", by_alias=True, exclude_none=True)
    ordered = {"result": data.pop("result"), **data}
    # A lone surrogate (JSON allows "\ud800") echoed from a request has no UTF-8 form; it
    # becomes "?" rather than making the reply impossible to send.
    return json.dumps(ordered, ensure_ascii=False).encode("utf-8", errors="replace")
