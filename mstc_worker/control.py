"""The control message's wire format: a cancel in, a clear answer out.

Owns what a canceller sends to the control queue (`MSTC_CONTROL_QUEUE`, which every replica
consumes) and what it hears back on its `reply_to`. The format is documented in the README's
"Cancel" section; a golden-file test holds it. The body is a JSON object:

    {"format": 1, "action": "cancel", "jobName": "NAME", "by": "who (optional)",
     "reason": "why (optional)"}

`jobName` is either the Job's made name (as a reply's `jobName` gives it) or the name the
request asked for. The answer's `status` is one word a program can act on: `cancelling`,
`unknown`, `finished`, `ambiguous`, `invalid` or `error`; `message` is a sentence for people.
A control message that cannot be read is answered `invalid` and acked: it is never requeued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ANSWER_TYPE",
    "CONTROL_FORMAT",
    "MAX_CONTROL_BYTES",
    "AnswerStatus",
    "CancelAnswer",
    "CancelCommand",
    "ControlRejected",
    "answer_body",
    "parse_control",
]

CONTROL_FORMAT = 1
ANSWER_TYPE = "mstc.control.answer"  # the AMQP `type` of an answer to a control message
MAX_CONTROL_BYTES = 16_384
_MAX_TEXT = 1_000  # `by` and `reason` end up in annotations: kept short

AnswerStatus = Literal["cancelling", "unknown", "finished", "ambiguous", "invalid", "error"]


class ControlRejected(ValueError):
    """A control message that says nothing the worker can do; the text says what to fix."""


@dataclass(frozen=True)
class CancelCommand:
    """A valid cancel: which Job, and who asked why (as the canceller said it, if at all)."""

    job_name: str
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CancelAnswer:
    """What the canceller is told.

    `job_name` is the made name of the Job it is about (None when there is none);
    `job_status` the status a finished Job ended with; `job_names` the candidates of an
    ambiguous name.
    """

    status: AnswerStatus
    message: str
    requested: str | None = None
    job_name: str | None = None
    job_status: str | None = None
    job_names: tuple[str, ...] = field(default_factory=tuple)


def parse_control(body: bytes) -> CancelCommand:
    """The cancel a control message asks for, or ControlRejected saying what is wrong."""
    if len(body) > MAX_CONTROL_BYTES:
        raise ControlRejected(
            f"The control message is {len(body)} bytes, over the limit of {MAX_CONTROL_BYTES}."
        )
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ControlRejected(
            'The control message is not a JSON object; send e.g. {"format": 1, '
            '"action": "cancel", "jobName": "my-job"}.'
        ) from None
    if not isinstance(data, dict):
        raise ControlRejected("The control message must be a JSON object, not "
                              f"{type(data).__name__}.")  # fmt: skip
    if data.get("format", CONTROL_FORMAT) != CONTROL_FORMAT:
        raise ControlRejected(
            f"Control message format {data.get('format')!r} is not known; this worker "
            f"reads format {CONTROL_FORMAT}."
        )
    action = data.get("action")
    if action != "cancel":
        raise ControlRejected(
            f"Field 'action' must be \"cancel\" (the only action there is); got {action!r}."
        )
    name = data.get("jobName")
    if not isinstance(name, str) or not name.strip():
        raise ControlRejected(
            "Field 'jobName' must name the Job to cancel: the name a reply gave, or the "
            "jobName the request was sent with."
        )
    return CancelCommand(job_name=name.strip(), by=_text(data, "by"), reason=_text(data, "reason"))


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ControlRejected(f"Field '{key}' must be a string if given; got {value!r}.")
    text = " ".join(value.split())  # one line: it becomes an annotation and a log line
    return text[:_MAX_TEXT] or None


def answer_body(answer: CancelAnswer) -> bytes:
    """The answer as JSON bytes; fields without a value are left out."""
    data: dict[str, Any] = {
        "format": CONTROL_FORMAT,
        "action": "cancel",
        "status": answer.status,
        "message": answer.message,
        "requestedName": answer.requested,
        "jobName": answer.job_name,
        "jobStatus": answer.job_status,
        "jobNames": list(answer.job_names) or None,
    }
    compact = {key: value for key, value in data.items() if value is not None}
    return json.dumps(compact, ensure_ascii=False).encode("utf-8", errors="replace")
