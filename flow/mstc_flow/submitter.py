"""Sending the flow's requests to the worker, and cancelling its Jobs, through `mstc_client`.

One `Client` for the service's life, on the fixed durable reply queue `settings.reply_queue`:
the worker's request identity is sha256 of correlation id, reply_to and body, so a re-send of
a firing (after a crash, or by another replica taking over a stale claim) must repeat all
three exactly. The correlation id is `flow:<firing id>`, the reply queue is fixed, and the body
is the stored request: kept as canonical JSON (sorted keys) and parsed back in that order, so
the client's serialisation of it is the same bytes on every send. The worker then adopts the
Job the first send made instead of making a second.

Replies themselves are not needed (the final event carries the outcome to every replica), so
the client acks and drops those it holds no handle for. Client errors become the flow's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mstc_client import Client, ClientConfig
from mstc_client.errors import MstcClientError, WaitTimeout
from mstc_flow.errors import TransientError
from mstc_flow.settings import FlowSettings

__all__ = ["Submitter", "request_body"]

_SENT_TIMEOUT = 15.0


def request_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as sent: its keys sorted at every level (canonical JSON parsed back), so
    the client serialises the same request to the same bytes every time."""
    parsed: dict[str, Any] = json.loads(json.dumps(request, sort_keys=True))
    return parsed


class Submitter:
    """Submit a firing's stored request; cancel a Job. Safe from several threads."""

    def __init__(self, settings: FlowSettings) -> None:
        config = ClientConfig(**{**vars(settings.client), "reply_queue_name": settings.reply_queue})
        self._who = f"mstc-flow/{settings.replica_id}"
        try:
            self._client = Client(config)
        except MstcClientError as exc:
            raise TransientError(f"The flow cannot reach the worker's broker: {exc}") from exc

    def submit(self, correlation_id: str, request: Mapping[str, Any]) -> None:
        """Return once the broker confirmed the request (it is durable in the work queue).

        Raises TransientError when it was not confirmed in time or was refused; submitting the
        same firing again is safe (the worker recognises the request).
        """
        try:
            handle = self._client.submit(request_body(request), correlation_id=correlation_id)
        except MstcClientError as exc:
            raise TransientError(f"The request could not be queued: {exc}") from exc
        if handle.wait_sent(_SENT_TIMEOUT):
            return
        if handle.done():
            try:
                handle.result()
            except MstcClientError as exc:
                raise TransientError(f"RabbitMQ did not take the request: {exc}") from exc
        raise TransientError(
            f"RabbitMQ did not confirm request {correlation_id} within "
            f"{_SENT_TIMEOUT:g} s ({self._client.broker_state})."
        )

    def cancel(self, job_name: str, reason: str, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the workers to cancel Job `job_name`; the worker's answer, camelCase."""
        try:
            answer = self._client.cancel(job_name, timeout=timeout, reason=reason, by=self._who)
        except WaitTimeout as exc:
            raise TransientError(str(exc)) from exc
        except MstcClientError as exc:
            raise TransientError(f"The cancel of {job_name!r} was not sent: {exc}") from exc
        return answer.model_dump(by_alias=True)

    def close(self) -> None:
        self._client.close()
