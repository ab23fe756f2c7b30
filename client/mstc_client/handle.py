"""`JobHandle`: what `Client.submit` returns, one per request, safe to share between threads.

The handle is a small state machine fed by the client's I/O thread: *queued* (in the outbox),
*sent* (the broker confirmed the publish, so the request is durable in the work queue), then
*done* (the reply arrived, or the request failed for good). Between *sent* and *done* a worker
that supports it says where the Job stands (*accepted*, *running*: progress messages, which the
client asks for with a header); those only inform, the reply alone ends the request. Callers
block on `wait`, poll with `done`/`result`, or register a callback; nothing here touches the
connection.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from mstc_client.errors import WaitTimeout
from mstc_client.protocol import Reply

if TYPE_CHECKING:
    from mstc_client.control import CancelAnswer

__all__ = ["JobHandle"]


class JobHandle:
    """One submitted request and, once it comes, its reply."""

    def __init__(
        self, request: dict[str, Any], body: bytes, correlation_id: str | None = None
    ) -> None:
        self.correlation_id = correlation_id or str(uuid.uuid4())
        self.request = request
        self.body = body
        self.submitted_at = time.monotonic()
        self._sent = threading.Event()
        self._reply: Future[Reply] = Future()
        self.job_state: str | None = None  # from the worker's progress messages, if any
        self.job_name: str | None = None  # known once the worker has accepted the request
        self.job_states: list[str] = []  # every state reported, in order
        # Set by the Client that sent it: Client.cancel.
        self.canceller: Callable[..., CancelAnswer] | None = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "sent" if self.is_sent else "queued"
        return f"<JobHandle {self.correlation_id} {state}>"

    @property
    def is_sent(self) -> bool:
        """Whether the broker has confirmed the request (it is safe in the work queue)."""
        return self._sent.is_set()

    @property
    def state(self) -> str:
        """ "queued", "sent", the Job's state ("accepted", "running") or "done": for displays."""
        if self.done():
            return "done"
        if self.job_state is not None:
            return self.job_state
        return "sent" if self.is_sent else "queued"

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Block until the broker confirmed the request; False if `timeout` passed first."""
        return self._sent.wait(timeout)

    def done(self) -> bool:
        """Whether the reply arrived (or the request failed for good)."""
        return self._reply.done()

    def wait(self, timeout: float | None = None) -> Reply:
        """Block until the reply arrives and return it.

        Raises WaitTimeout when `timeout` seconds pass first (the request goes on: call `wait`
        again), ClientClosed when the client closes, or the error that ended the request.
        """
        try:
            return self._reply.result(timeout)
        except TimeoutError:
            if self._reply.done():
                raise  # the request itself failed with a timeout-like error
            state = "confirmed by the broker" if self.is_sent else "not yet sent to the broker"
            raise WaitTimeout(
                f"No reply to request {self.correlation_id} within {timeout:g} s (it is "
                f"{state}). The Job may still be queued or running: wait longer, or check "
                "that a worker consumes the work queue."
            ) from None

    def result(self) -> Reply | None:
        """The reply if it has arrived, else None; raises the error that ended the request."""
        return self._reply.result() if self._reply.done() else None

    def cancel(self, timeout: float = 30.0, reason: str | None = None) -> CancelAnswer:
        """Cancel this request's Job (see `Client.cancel`); its reply is then `cancelled`.

        The Job is named by the name the worker gave it once accepted, else by the jobName
        the request was sent with.
        """
        if self.canceller is None:
            raise RuntimeError("This handle was not made by Client.submit; use Client.cancel.")
        name = self.job_name or str(self.request.get("jobName", ""))
        return self.canceller(name, timeout=timeout, reason=reason)

    def add_done_callback(self, callback: Callable[[JobHandle], None]) -> None:
        """Call `callback(handle)` when done; it runs on the client's I/O thread, keep it short."""
        self._reply.add_done_callback(lambda _future: callback(self))

    # --- fed by the I/O thread ----------------------------------------------------------------

    def mark_sent(self) -> None:
        self._sent.set()

    def note_progress(self, state: str, job_name: str | None) -> None:
        self.job_states.append(state)
        self.job_state = state
        if job_name:
            self.job_name = job_name

    def resolve(self, reply: Reply) -> None:
        # The first outcome wins; a late one (a duplicate reply, close() racing it) is dropped.
        with contextlib.suppress(InvalidStateError):
            self._reply.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):
            self._reply.set_exception(exc)
