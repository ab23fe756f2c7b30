"""`Result`: what `Client.run` returns, and the error each outcome maps to.

A Result is plain data (status, exit code, reason, durations, local paths, the raw reply), so
callers branch on `result.status` or call `raise_for_status()` for exceptions. A Java-era
worker's "Job X complete." reply has `Status.UNKNOWN`: the Job ran, but only its log says how it
ended, so `ok` is False and `raise_for_status()` does not raise; read `log_path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstc_client.errors import JobFailed, JobTimedOut, MstcClientError, RequestRejected
from mstc_client.protocol import Reply, Status

__all__ = ["Result", "error_for"]


@dataclass(frozen=True)
class Result:
    """The outcome of one `Client.run`: the worker's reply plus what the client did around it."""

    status: Status
    reply: Reply
    correlation_id: str
    bucket: str
    output_bucket: str
    prefix: str
    inputs: tuple[str, ...]  # object names uploaded
    outputs: tuple[Path, ...]  # local files downloaded, the log excluded
    log_path: Path | None
    upload_seconds: float
    wait_seconds: float
    download_seconds: float

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED

    @property
    def job_name(self) -> str | None:
        return self.reply.job_name

    @property
    def exit_code(self) -> int | None:
        return self.reply.exit_code

    @property
    def reason(self) -> str | None:
        return self.reply.reason

    @property
    def job_duration_ms(self) -> int | None:
        return self.reply.duration_ms

    def raise_for_status(self) -> Result:
        """Return self when the Job succeeded (or its outcome is unknown); raise otherwise."""
        error = error_for(self.reply)
        if error is not None:
            raise error
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what `mstc --json` prints)."""
        return {
            "status": self.status.value,
            "ok": self.ok,
            "jobName": self.job_name,
            "exitCode": self.exit_code,
            "reason": self.reason,
            "message": None if self.ok else self.reply.explanation,
            "correlationId": self.correlation_id,
            "bucket": self.bucket,
            "outputBucket": self.output_bucket,
            "prefix": self.prefix,
            "inputs": list(self.inputs),
            "outputs": [str(path) for path in self.outputs],
            "log": None if self.log_path is None else str(self.log_path),
            "durations": {
                "jobMs": self.job_duration_ms,
                "uploadSeconds": round(self.upload_seconds, 3),
                "waitSeconds": round(self.wait_seconds, 3),
                "downloadSeconds": round(self.download_seconds, 3),
            },
            "reply": self.reply.model_dump(mode="json", by_alias=True, exclude_none=True),
        }


def error_for(reply: Reply) -> MstcClientError | None:
    """The exception a reply stands for, or None for succeeded and unknown outcomes."""
    name = reply.job_name or "the request"
    why = reply.explanation
    if reply.status is Status.FAILED:
        return JobFailed(f"Job {name} failed: {why}. Read its log for details.", reply)
    if reply.status is Status.ERROR:
        return JobFailed(
            f"The worker could not run {name}: {why}. Retry later; if it persists, the "
            "worker's own log says more.",
            reply,
        )
    if reply.status is Status.TIMEOUT:
        return JobTimedOut(
            f"Job {name} ran past its timeout and was stopped ({why}); give it a longer "
            "timeout (timeOut minutes, `mstc run --timeout`).",
            reply,
        )
    if reply.status is Status.CANCELLED:
        return JobFailed(f"Job {name} was cancelled: {why}", reply)
    if reply.status is Status.REJECTED:
        return RequestRejected(f"The worker refused the request: {why} Fix it and resend.", reply)
    return None
