"""Waiting for one reply with a deadline, reporting where the request stands while it waits.

`Client.wait` and `Client.run` delegate here. The wait is cut into slices of about a second
when someone listens (`on_tick`), so that a display can show the elapsed time and the Job's
state; without a listener it is one block. At the deadline the request is forgotten by the link
(a reconnect must not re-send it) and the error says what was known about it. The link is
reached through `ReplyLink`, the three things the wait needs, so the rules here can be checked
without a broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mstc_client.errors import WaitTimeout
from mstc_client.handle import JobHandle
from mstc_client.protocol import Reply

__all__ = ["ReplyLink", "Waiting", "wait_for_reply"]

# How often a listener hears about a request still waiting.
_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Waiting:
    """Reported about once a second while `run` waits for the reply."""

    elapsed: float
    state: str  # "queued", "sent", the Job's ("accepted", "running"), or a reconnecting note
    job_name: str | None = None  # once the worker has said which Job it made


class ReplyLink(Protocol):
    """What a wait needs of the broker link (mstc_client.broker.BrokerLink has it)."""

    connected: threading.Event

    @property
    def state(self) -> str: ...

    def forget(self, handle: JobHandle) -> None: ...


def wait_for_reply(
    handle: JobHandle,
    timeout: float,
    link: ReplyLink,
    on_tick: Callable[[Waiting], None] | None = None,
    *,
    tick_seconds: float = _TICK_SECONDS,
) -> Reply:
    """The reply to `handle` within `timeout` seconds, telling `on_tick` every `tick_seconds`.

    Raises WaitTimeout at the deadline, after the link forgot the handle.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            return handle.wait(min(remaining, tick_seconds) if on_tick else remaining)
        except WaitTimeout:
            if time.monotonic() >= deadline:
                link.forget(handle)
                raise _gave_up(handle, timeout, link.state) from None
        if on_tick is not None:
            on_tick(waiting_report(handle, link))


def waiting_report(handle: JobHandle, link: ReplyLink) -> Waiting:
    """Where the request stands: its own state while connected, else why the link is down."""
    state = handle.state if link.connected.is_set() else link.state
    return Waiting(time.monotonic() - handle.submitted_at, state, handle.job_name)


def _gave_up(handle: JobHandle, timeout: float, link_state: str) -> WaitTimeout:
    return WaitTimeout(
        f"No reply within {timeout:g} s (request {handle.correlation_id}, {handle.state}; "
        f"broker {link_state}). The Job may still be queued or running; raise the wait time, "
        "or check that a worker consumes the work queue."
    )
