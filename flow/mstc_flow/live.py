"""The live feed: what the inbox just heard, fanned out to the dashboard's open pages.

Owns turning an inbox message into a small change notice (`notice`: a job event names its
request and state and says whether a pipeline task sent it, a heartbeat its replica, a
pipeline event its pipeline; `pipeline_notice` makes the last from the events this replica's
runner publishes, as the inbox is bound to the worker's keys only) and handing each notice to
every listener (`Broadcaster`). The inbox thread publishes; listeners read on the web
server's event loop, so each listener is an asyncio queue filled through
`call_soon_threadsafe` and never blocks the inbox. Queues are bounded: a listener that falls
`QUEUE_SIZE` notices behind is dropped (its stream ends; the browser reconnects and reloads
what it shows), so a slow page cannot hold memory or slow the recording of events. `close`
ends every stream (the service stops).
No web library here: the web layer adapts a `Listener` to server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["QUEUE_SIZE", "Broadcaster", "Listener", "notice", "pipeline_notice"]

QUEUE_SIZE = 256
_JOB_PREFIX = "mstc.job."
_WORKER_PREFIX = "mstc.worker."
_PIPELINE_PREFIX = "mstc.pipeline."
# What ends a listener's stream: the service stops, or the listener fell behind.
_END: dict[str, Any] = {}


def notice(routing_key: str, body: bytes) -> dict[str, Any] | None:
    """The change a message announces, or None when it is not one the pages show."""
    if not routing_key.startswith((_JOB_PREFIX, _WORKER_PREFIX, _PIPELINE_PREFIX)):
        return None
    document = _document(body)
    if document is None:
        return None
    if routing_key.startswith(_PIPELINE_PREFIX):
        return pipeline_notice(document)
    if routing_key.startswith(_WORKER_PREFIX):
        replica = document.get("replica")
        return {"kind": "replica", "replica": replica} if isinstance(replica, str) else None
    request_id = document.get("requestId")
    if not isinstance(request_id, str):
        return None
    correlation = document.get("correlationId")
    return {"kind": "job", "requestId": request_id,
            "state": _text(document.get("event")),
            "jobName": _text(document.get("jobName")),
            "pipelineTask": isinstance(correlation, str) and correlation.startswith("pipe:"),
            }  # fmt: skip


def _document(body: bytes) -> Mapping[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, Mapping) else None


def pipeline_notice(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The change a pipeline event (`mstc_flow.pipeline_events`' body) announces."""
    pipeline_id = event.get("pipelineId")
    if not isinstance(pipeline_id, str):
        return None
    return {"kind": "pipeline", "pipelineId": pipeline_id[:64],
            "state": _text(event.get("state")), "task": _text(event.get("task"))}  # fmt: skip


def _text(value: object) -> str | None:
    return value[:253] if isinstance(value, str) else None


class Listener:
    """One open page's queue of notices, read on the loop it was made on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = False

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next notice; None when none came within `timeout` (send a keep-alive); raises
        EOFError once the stream is over."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if item is _END:
            raise EOFError("the live feed ended")
        return item

    def offer(self, item: dict[str, Any]) -> None:
        """From any thread: queue `item`, or end this listener if it is full."""
        self._loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: dict[str, Any]) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            self._queue.get_nowait()  # room for the end marker
            self._queue.put_nowait(_END)


class Broadcaster:
    """Every listener gets every notice published after it subscribed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._closed = False

    def subscribe(self) -> Listener:
        """A listener on the running event loop (call from a coroutine)."""
        listener = Listener(asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                listener.offer(_END)
            else:
                self._listeners.add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def publish(self, item: dict[str, Any]) -> None:
        with self._lock:
            listeners = [each for each in self._listeners if not each.dropped]
        for listener in listeners:
            try:
                listener.offer(item)
            except RuntimeError:  # its loop closed under it (the server stopped)
                self.unsubscribe(listener)

    def close(self) -> None:
        """End every stream, now and for listeners that come later."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = list(self._listeners), set()
        for listener in listeners:
            with contextlib.suppress(RuntimeError):  # its loop closed: nothing to end
                listener.offer(_END)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)
