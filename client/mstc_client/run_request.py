"""`RunRequest`: everything one `Client.run` needs to know, as one value.

A run differs from the `JobRequest` the worker receives: it names local inputs and an output
directory, leaves the bucket and prefix to be chosen, and says how long to wait. Once the
inputs are staged, `job_request` turns it into the `JobRequest` to send. `Client.run` also takes
the same fields as arguments (`client.run(image, job_name, inputs, output_dir, timeout=...)`,
the form the README shows); `RunOptions` types those keywords and `as_run_request` folds either
form into a RunRequest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from mstc_client.protocol import JobRequest, Resources

__all__ = [
    "DEFAULT_TIMEOUT_MINUTES",
    "RunOptions",
    "RunRequest",
    "as_run_request",
    "timeout_minutes_of",
    "wait_budget",
]

# The worker's default for a request without timeOut; only used to size the client's wait.
DEFAULT_TIMEOUT_MINUTES = 15
# Beyond the Job's own timeout: queueing, pod start, log upload and the reply itself.
_WAIT_MARGIN_SECONDS = 300


def wait_budget(timeout_minutes: int | None) -> float:
    """Seconds to wait for a reply to a request with this timeOut."""
    return (timeout_minutes or DEFAULT_TIMEOUT_MINUTES) * 60 + _WAIT_MARGIN_SECONDS


def timeout_minutes_of(value: object) -> int | None:
    """The minutes a request body's `timeOut` asks for, in any form the worker reads.

    The worker reads timeOut as the Java worker's JSON binding did ("15", 2.9 and 15 all
    count), so a request file may hold any of them; None (the default) for anything else,
    since the worker, not the client, decides what is valid.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str) and value.strip().lstrip("+").isdecimal() and len(value) < 12:
        return int(value.strip())
    return None


@dataclass(frozen=True)
class RunRequest:
    """Run `image` on `inputs` and bring its outputs and log into `output_dir`.

    `timeout` is the Job's timeOut in minutes (the worker's default when None); `wait_timeout`
    how long to wait for the reply, in seconds (default: the timeout plus five minutes).
    `bucket` holds the inputs (the client's configured bucket when None), `output_bucket` the
    outputs (default: `bucket`), `prefix` names them (default: a fresh `run-<hex>`);
    `output_dir` defaults to a directory named after the prefix. `completions`, `parallelism`
    and `indexed` fan the run out over many pods (the worker's defaults: one pod). `extra` is
    merged into the request body as is.
    """

    image: str
    job_name: str
    inputs: Sequence[str | Path] = ()
    output_dir: str | Path | None = None
    timeout: int | None = None
    bucket: str | None = None
    output_bucket: str | None = None
    prefix: str | None = None
    env: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None
    labels: Mapping[str, str] | None = None
    resources: Resources | None = None
    command: Sequence[str] | None = None
    args: Sequence[str] | None = None
    extra: Mapping[str, Any] | None = None
    wait_timeout: float | None = None
    completions: int | None = None
    parallelism: int | None = None
    indexed: bool = False

    @property
    def wait_seconds(self) -> float:
        """How long to wait for the reply."""
        return self.wait_timeout or wait_budget(self.timeout)

    def job_request(self, bucket: str, output_bucket: str | None, prefix: str) -> JobRequest:
        """The request to send once the inputs are in `bucket` under `prefix`."""
        return JobRequest(
            image=self.image,
            job_name=self.job_name,
            input_bucket=bucket,
            output_bucket=output_bucket,
            prefix=prefix,
            timeout_minutes=self.timeout,
            env=dict(self.env or {}),
            resources=self.resources,
            command=None if self.command is None else list(self.command),
            args=None if self.args is None else list(self.args),
            annotations=dict(self.annotations or {}),
            labels=dict(self.labels or {}),
            completions=self.completions,
            parallelism=self.parallelism,
            completion_mode="Indexed" if self.indexed else None,
            extra=dict(self.extra or {}),
        )


class RunOptions(TypedDict, total=False):
    """The keyword fields of a RunRequest, for `Client.run(image, job_name, ..., **options)`."""

    timeout: int | None
    bucket: str | None
    output_bucket: str | None
    prefix: str | None
    env: Mapping[str, str] | None
    annotations: Mapping[str, str] | None
    labels: Mapping[str, str] | None
    resources: Resources | None
    command: Sequence[str] | None
    args: Sequence[str] | None
    extra: Mapping[str, Any] | None
    wait_timeout: float | None
    completions: int | None
    parallelism: int | None
    indexed: bool


def as_run_request(
    request: RunRequest | str,
    job_name: str | None,
    inputs: Sequence[str | Path],
    output_dir: str | Path | None,
    options: RunOptions,
) -> RunRequest:
    """`request` itself, or a RunRequest made of the image `request` and the other arguments."""
    if isinstance(request, RunRequest):
        if job_name is not None or inputs or output_dir is not None or options:
            raise TypeError("Client.run takes a RunRequest or the run's fields, not both.")
        return request
    if job_name is None:
        raise TypeError("Client.run needs a job_name with the image.")
    return RunRequest(request, job_name, inputs, output_dir, **options)
