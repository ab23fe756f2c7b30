"""`Client`: the one object a caller needs, for a single script run or a long-lived web app.

It owns a `BrokerLink` (one AMQP connection, one I/O thread, replies routed by correlation_id;
see mstc_client.broker) and, created on first use, a `Storage` (see mstc_client.storage).
`submit` is the low-level, non-blocking call and may be used from any number of threads at once;
`run` is the whole round trip: upload the inputs under a fresh prefix, send the request, wait,
download the outputs and the log, return a `Result`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from mstc_client.broker import BrokerLink, ConnectionFactory
from mstc_client.config import ClientConfig
from mstc_client.errors import WaitTimeout
from mstc_client.handle import JobHandle
from mstc_client.protocol import JobRequest, Reply, Resources
from mstc_client.result import Result
from mstc_client.storage import Progress, Storage, Uploaded, input_files, new_prefix

__all__ = ["DEFAULT_TIMEOUT_MINUTES", "Client", "Staged", "Waiting", "wait_budget"]

# The worker's default for a request without timeOut; only used to size the client's wait.
DEFAULT_TIMEOUT_MINUTES = 15
# Beyond the Job's own timeout: queueing, pod start, log upload and the reply itself.
_WAIT_MARGIN_SECONDS = 300


@dataclass(frozen=True)
class Waiting:
    """Reported about once a second while `run` waits for the reply."""

    elapsed: float
    state: str  # "queued", "sent", the Job's ("accepted", "running"), or a reconnecting note
    job_name: str | None = None  # once the worker has said which Job it made


@dataclass(frozen=True)
class Staged:
    """Inputs uploaded for one run: where they are, under which prefix."""

    bucket: str
    prefix: str
    uploaded: tuple[Uploaded, ...]


def wait_budget(timeout_minutes: int | None) -> float:
    """Seconds to wait for a reply to a request with this timeOut."""
    return (timeout_minutes or DEFAULT_TIMEOUT_MINUTES) * 60 + _WAIT_MARGIN_SECONDS


class Client:
    """Submit requests to mstc workers and collect their results.

    Configuration comes from `config`, else from the environment (see ClientConfig). Pass
    `connection_factory` (returning a pika.BlockingConnection) or `minio` (a minio.Minio) to
    inject connections. Opening connects to the broker and raises BrokerUnreachable if it
    cannot within `connect_timeout_seconds`; later drops are retried in the background.
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        connection_factory: ConnectionFactory | None = None,
        minio: Any = None,
    ) -> None:
        self.config = config or ClientConfig.from_env()
        self._minio = minio
        self._storage: Storage | None = None
        self._storage_lock = threading.Lock()
        self._link = BrokerLink(self.config, connection_factory)
        self._link.start()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; requests still waiting fail with ClientClosed."""
        self._link.close()

    @property
    def storage(self) -> Storage:
        """The storage client, made on first use (a submit-only caller never needs one)."""
        with self._storage_lock:
            if self._storage is None:
                self._storage = Storage(self.config, self._minio)
            return self._storage

    @property
    def reply_queue(self) -> str:
        """The queue this client's replies arrive on (the reply_to of every request)."""
        return self._link.reply_queue

    @property
    def broker_state(self) -> str:
        """ "connected", or why the client is reconnecting."""
        return self._link.state

    @property
    def reconnects(self) -> int:
        """How many times the broker connection was re-established since opening."""
        return self._link.reconnects

    # --- low level ----------------------------------------------------------------------------

    def submit(
        self, request: JobRequest | Mapping[str, Any], *, correlation_id: str | None = None
    ) -> JobHandle:
        """Queue `request` for sending and return its handle at once; safe from any thread.

        A mapping is sent as it is (a raw request, as `mstc send` does). The request is
        published by the client's I/O thread; `handle.wait_sent()` says when the broker has it.
        """
        body = request.to_body() if isinstance(request, JobRequest) else dict(request)
        handle = JobHandle(body, json.dumps(body).encode("utf-8"), correlation_id)
        self._link.submit(handle)
        return handle

    def wait(
        self,
        handle: JobHandle,
        timeout: float,
        on_tick: Callable[[Waiting], None] | None = None,
    ) -> Reply:
        """`handle.wait(timeout)`, reporting a `Waiting` about every second to `on_tick`.

        On WaitTimeout the handle is forgotten: it will not be re-sent after a reconnect.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return handle.wait(max(0.0, min(remaining, 1.0) if on_tick else remaining))
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    self._link.forget(handle)
                    raise WaitTimeout(
                        f"No reply within {timeout:g} s (request {handle.correlation_id}, "
                        f"{handle.state}; broker {self._link.state}). The Job may still be "
                        "queued or running; raise the wait time, or check that a worker "
                        "consumes the work queue."
                    ) from None
            if on_tick is not None:
                state = handle.state if self._link.connected.is_set() else self._link.state
                elapsed = time.monotonic() - handle.submitted_at
                on_tick(Waiting(elapsed, state, handle.job_name))

    def upload_inputs(
        self,
        inputs: Iterable[str | Path],
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> Staged:
        """Upload files and directories under a fresh prefix (see mstc_client.storage)."""
        bucket = bucket or self.config.bucket
        prefix = prefix or new_prefix()
        files = input_files([Path(path) for path in inputs], prefix)  # checked before uploading
        self.storage.ensure_bucket(bucket)
        return Staged(bucket, prefix, tuple(self.storage.upload(files, bucket, progress)))

    # --- the round trip -----------------------------------------------------------------------

    def run(
        self,
        image: str,
        job_name: str,
        inputs: Sequence[str | Path] = (),
        output_dir: str | Path | None = None,
        *,
        timeout: int | None = None,
        bucket: str | None = None,
        output_bucket: str | None = None,
        prefix: str | None = None,
        env: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        command: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        wait_timeout: float | None = None,
        progress: Callable[[Progress | Waiting], None] | None = None,
    ) -> Result:
        """Run `image` on `inputs` and bring its outputs and log into `output_dir`.

        `timeout` is the Job's timeOut in minutes (the worker's default when None);
        `wait_timeout` how long to wait for the reply, in seconds (default: the timeout plus
        five minutes). Every outcome of the Job is returned as a Result (see its
        `raise_for_status`); errors of the client, the broker or storage are raised.
        """
        started = time.monotonic()
        staged = self.upload_inputs(inputs, bucket=bucket, prefix=prefix, progress=progress)
        out_bucket = output_bucket or staged.bucket
        if out_bucket != staged.bucket:
            self.storage.ensure_bucket(out_bucket)
        request = JobRequest(
            image=image,
            job_name=job_name,
            input_bucket=staged.bucket,
            output_bucket=out_bucket,
            prefix=staged.prefix,
            timeout_minutes=timeout,
            env=dict(env or {}),
            resources=resources,
            command=None if command is None else list(command),
            args=None if args is None else list(args),
            annotations=dict(annotations or {}),
            labels=dict(labels or {}),
            extra=dict(extra or {}),
        )
        uploaded_at = time.monotonic()
        handle = self.submit(request)
        reply = self.wait(handle, wait_timeout or wait_budget(timeout), progress)
        replied_at = time.monotonic()
        outputs: list[Path] = []
        log_path = None
        if reply.job_name is not None:  # a Job ran: it may have left outputs and a log
            target = Path(output_dir) if output_dir is not None else Path(staged.prefix)
            same = out_bucket == staged.bucket
            unchanged = {u.key: u.etag for u in staged.uploaded} if same else {}
            outputs = self.storage.download(
                reply.output_bucket or out_bucket,
                staged.prefix,
                target,
                unchanged=unchanged,
                progress=progress,
            )
            log_name = reply.log_object or f"{staged.prefix}-{reply.job_name}.log"
            log_path = next((p for p in outputs if p.name == log_name), None)
        return Result(
            status=reply.status,
            reply=reply,
            correlation_id=handle.correlation_id,
            bucket=staged.bucket,
            output_bucket=out_bucket,
            prefix=staged.prefix,
            inputs=tuple(u.key for u in staged.uploaded),
            outputs=tuple(p for p in outputs if p != log_path),
            log_path=log_path,
            upload_seconds=uploaded_at - started,
            wait_seconds=replied_at - uploaded_at,
            download_seconds=time.monotonic() - replied_at,
        )
