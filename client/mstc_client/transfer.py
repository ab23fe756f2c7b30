"""The two storage halves of a run: staging the inputs, and fetching what the Job left.

`stage_inputs` checks every input and names it (mstc_client.storage's rule) before uploading
anything, under a fresh prefix unless one is given. `fetch_outputs` brings back what the Job
wrote under that prefix, and only when a Job ran (a rejected request left nothing): inputs
uploaded unchanged are skipped when the outputs share their bucket, and the log
(`<prefix>-<job>.log`, or the object the reply names) is told apart from the outputs. Both reach
storage through `RunStorage`, the calls they need, so these rules can be checked without MinIO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mstc_client.protocol import Reply
from mstc_client.storage import Progress, Uploaded, input_files, new_prefix

__all__ = ["Fetched", "RunStorage", "Staged", "fetch_outputs", "log_object_name", "stage_inputs"]


class RunStorage(Protocol):
    """The storage calls a run makes (mstc_client.storage.Storage has them)."""

    def ensure_bucket(self, bucket: str) -> None: ...

    def upload(
        self,
        files: Sequence[tuple[Path, str]],
        bucket: str,
        progress: Callable[[Progress], None] | None = None,
    ) -> list[Uploaded]: ...

    def download(
        self,
        bucket: str,
        prefix: str,
        output_dir: Path,
        *,
        unchanged: Mapping[str, str] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> list[Path]: ...


@dataclass(frozen=True)
class Staged:
    """Inputs uploaded for one run: where they are, under which prefix."""

    bucket: str
    prefix: str
    uploaded: tuple[Uploaded, ...]


@dataclass(frozen=True)
class Fetched:
    """What a run brought back: the outputs, and the log apart from them."""

    outputs: tuple[Path, ...] = ()
    log_path: Path | None = None


def stage_inputs(
    storage: RunStorage,
    inputs: Iterable[str | Path],
    bucket: str,
    prefix: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Staged:
    """Upload files and directories into `bucket` under `prefix` (a fresh one when None)."""
    prefix = prefix or new_prefix()
    files = input_files([Path(path) for path in inputs], prefix)  # checked before uploading
    storage.ensure_bucket(bucket)
    return Staged(bucket, prefix, tuple(storage.upload(files, bucket, progress)))


def fetch_outputs(
    storage: RunStorage,
    staged: Staged,
    reply: Reply,
    *,
    output_bucket: str,
    output_dir: str | Path | None,
    progress: Callable[[Progress], None] | None = None,
) -> Fetched:
    """Download what the Job wrote under the run's prefix into `output_dir`; nothing if no Job ran.

    `output_dir` defaults to a directory named after the prefix.
    """
    if reply.job_name is None:  # no Job ran, so none left outputs or a log
        return Fetched()
    same_bucket = output_bucket == staged.bucket
    paths = storage.download(
        reply.output_bucket or output_bucket,
        staged.prefix,
        Path(output_dir) if output_dir is not None else Path(staged.prefix),
        unchanged={u.key: u.etag for u in staged.uploaded} if same_bucket else {},
        progress=progress,
    )
    log_name = log_object_name(reply, staged.prefix)
    log_path = next((path for path in paths if path.name == log_name), None)
    return Fetched(tuple(path for path in paths if path != log_path), log_path)


def log_object_name(reply: Reply, prefix: str) -> str:
    """The log's object name: the one the reply gives, else the worker's convention."""
    return reply.log_object or f"{prefix}-{reply.job_name}.log"
