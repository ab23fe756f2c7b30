"""`Client`: the one object a caller needs, for a single script run or a long-lived web app.

It owns a `BrokerLink` (one AMQP connection, one I/O thread, replies routed by correlation_id;
see mstc_client.broker) and, created on first use, a `Storage` (see mstc_client.storage).
`submit` is the low-level, non-blocking call and may be used from any number of threads at once;
`run` is the whole round trip of a `RunRequest`: stage the inputs under a fresh prefix, send the
request, wait, fetch the outputs and the log, return a `Result`. The parts live in their own
modules, each testable alone: mstc_client.transfer (staging and fetching), mstc_client.waiting
(the wait with its deadline) and mstc_client.run_request (the run and the request it becomes).
"""

from __future__ import annotations

import getpass
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack, overload

from mstc_client.broker import BrokerLink, ConnectionFactory
from mstc_client.config import ClientConfig
from mstc_client.control import CancelAnswer, ControlCall, cancel_body
from mstc_client.errors import WaitTimeout
from mstc_client.handle import JobHandle
from mstc_client.protocol import JobRequest, Reply
from mstc_client.result import Result
from mstc_client.run_request import RunOptions, RunRequest, as_run_request
from mstc_client.storage import Progress, Storage
from mstc_client.transfer import Fetched, Staged, fetch_outputs, stage_inputs
from mstc_client.waiting import Waiting, wait_for_reply

__all__ = ["Client"]


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
        handle.canceller = self.cancel
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
        return wait_for_reply(handle, timeout, self._link, on_tick)

    def cancel(
        self, name: str, *, timeout: float = 30.0, reason: str | None = None,
        by: str | None = None,
    ) -> CancelAnswer:  # fmt: skip
        """Ask the workers to cancel Job `name` (its Job name, or the jobName it was sent with).

        Returns the worker's answer (`status` "cancelling", "unknown", "finished",
        "ambiguous", ...); the request itself is then answered `cancelled`. `by` defaults
        to user@host. Raises WaitTimeout if no answer comes within `timeout` seconds.
        """
        who = by or f"{getpass.getuser()}@{socket.gethostname()}"
        call = ControlCall(cancel_body(name, by=who, reason=reason))
        self._link.control(call)
        try:
            return call.answer.result(timeout)
        except TimeoutError:
            self._link.forget_control(call)
            raise WaitTimeout(
                f"No answer to the cancel of {name!r} within {timeout:g} s; check that a worker "
                f"consumes control queue {self.config.control_queue!r} (MSTC_CONTROL_QUEUE)."
            ) from None

    def upload_inputs(
        self,
        inputs: Iterable[str | Path],
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> Staged:
        """Upload files and directories under a fresh prefix (see mstc_client.storage)."""
        return stage_inputs(self.storage, inputs, bucket or self.config.bucket, prefix, progress)

    # --- the round trip -----------------------------------------------------------------------

    @overload
    def run(
        self, request: RunRequest, /, *, progress: Callable[[Progress | Waiting], None] | None = ...
    ) -> Result: ...

    @overload
    def run(
        self,
        image: str,
        /,
        job_name: str,
        inputs: Sequence[str | Path] = (),
        output_dir: str | Path | None = None,
        *,
        progress: Callable[[Progress | Waiting], None] | None = None,
        **options: Unpack[RunOptions],
    ) -> Result: ...

    def run(
        self,
        request: RunRequest | str | None = None,
        /,
        job_name: str | None = None,
        inputs: Sequence[str | Path] = (),
        output_dir: str | Path | None = None,
        *,
        progress: Callable[[Progress | Waiting], None] | None = None,
        image: str | None = None,
        **options: Unpack[RunOptions],
    ) -> Result:
        """Run a `RunRequest` (or one made of these arguments, see its fields) to the end.

        Every outcome of the Job is returned as a Result (see its `raise_for_status`); errors of
        the client, the broker or storage are raised. `progress` hears about transfers
        (`Progress`) and, about once a second, the wait (`Waiting`).
        """
        if image is not None:  # `run(image=..., job_name=...)`: the keyword form still runs
            if request is not None:
                raise TypeError("Client.run got the image twice.")
            request = image
        if request is None:
            raise TypeError("Client.run needs a RunRequest or an image.")
        run = as_run_request(request, job_name, inputs, output_dir, options)
        started = time.monotonic()
        staged = self.upload_inputs(
            run.inputs, bucket=run.bucket, prefix=run.prefix, progress=progress
        )
        output_bucket = run.output_bucket or staged.bucket
        if output_bucket != staged.bucket:
            self.storage.ensure_bucket(output_bucket)
        uploaded_at = time.monotonic()
        handle = self.submit(run.job_request(staged.bucket, output_bucket, staged.prefix))
        reply = self.wait(handle, run.wait_seconds, progress)
        replied_at = time.monotonic()
        fetched = fetch_outputs(
            self.storage, staged, reply,
            output_bucket=output_bucket, output_dir=run.output_dir, progress=progress,
        )  # fmt: skip
        seconds = (uploaded_at - started, replied_at - uploaded_at, time.monotonic() - replied_at)
        return _result(handle, reply, staged, fetched, output_bucket=output_bucket, seconds=seconds)


def _result(
    handle: JobHandle,
    reply: Reply,
    staged: Staged,
    fetched: Fetched,
    *,
    output_bucket: str,
    seconds: tuple[float, float, float],
) -> Result:
    """The Result of a run, from its parts and how long upload, wait and download took."""
    upload_seconds, wait_seconds, download_seconds = seconds
    return Result(
        status=reply.status,
        reply=reply,
        correlation_id=handle.correlation_id,
        bucket=staged.bucket,
        output_bucket=output_bucket,
        prefix=staged.prefix,
        inputs=tuple(u.key for u in staged.uploaded),
        outputs=fetched.outputs,
        log_path=fetched.log_path,
        upload_seconds=upload_seconds,
        wait_seconds=wait_seconds,
        download_seconds=download_seconds,
    )
