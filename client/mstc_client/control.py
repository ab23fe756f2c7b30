"""The control message, mirrored from the worker: a cancel out, a `CancelAnswer` in.

The client must not import the worker, so this restates the contract of the worker's
README ("Cancel"): the body {"format": 1, "action": "cancel", "jobName", "by", "reason"} goes
to the control queue (MSTC_CONTROL_QUEUE) with `reply_to` and `correlation_id`; the answer
comes back with the AMQP type `mstc.control.answer` and says `status` (`cancelling`,
`unknown`, `finished`, `ambiguous`, `invalid`, `error`) and a `message` for people.
`ControlCall` is one cancel on its way: the client's I/O thread publishes it and resolves it.
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import Future

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ANSWER_TYPE", "CancelAnswer", "ControlCall", "cancel_body", "parse_cancel_answer"]

ANSWER_TYPE = "mstc.control.answer"


class CancelAnswer(BaseModel):
    """What the worker said to a cancel. `job_name` is the Job it is about, if any."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    status: str
    message: str
    requested_name: str | None = Field(default=None, alias="requestedName")
    job_name: str | None = Field(default=None, alias="jobName")
    job_status: str | None = Field(default=None, alias="jobStatus")
    job_names: list[str] = Field(default_factory=list, alias="jobNames")

    def to_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cancel_body(job_name: str, *, by: str | None = None, reason: str | None = None) -> bytes:
    """The control message that cancels `job_name` (a Job's name or a request's jobName)."""
    data: dict[str, object] = {"format": 1, "action": "cancel", "jobName": job_name}
    if by:
        data["by"] = by
    if reason:
        data["reason"] = reason
    return json.dumps(data).encode("utf-8")


def parse_cancel_answer(body: bytes) -> CancelAnswer:
    """The answer, or an `error` answer saying it could not be read."""
    try:
        return CancelAnswer.model_validate_json(body)
    except ValidationError:
        text = body[:200].decode("utf-8", errors="replace")
        return CancelAnswer(status="error", message=f"The worker's answer is unreadable: {text}")


class ControlCall:
    """One control message: sent by the I/O thread, answered through `answer`."""

    def __init__(self, body: bytes) -> None:
        self.correlation_id = f"control-{uuid.uuid4()}"
        self.body = body
        self.answer: Future[CancelAnswer] = Future()
