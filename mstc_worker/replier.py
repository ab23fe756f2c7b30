"""What the service publishes about a request: its reply, its progress, its dead letter.

Owns the shape and the delivery rules of the service's own messages to clients, so that
every path that answers a request (rejected on sight, failed to start, finished, crashed a
process twice) answers the same way:

* A reply goes to the request's `reply_to`, or to the results queue if it named none, and
  is confirmed; one that cannot be published raises, so what follows it in the caller (the
  ack, the Job let go) does not happen.
* A progress message is best effort: never retried, never re-routed, and only to a client
  that asked for them (the service decides that from the request's headers).
* A dead letter is the request's own body, with why it was given up and where its reply
  went in `x-mstc-*` headers, on the dead-letter queue.

(The record of replies kept to answer a request sent again is `replies`, in the worker
processes.) All of it runs on the connection's thread, as the broker's calls must.
"""

from __future__ import annotations

import logging

from mstc_worker.metrics import Metrics
from mstc_worker.ports import BrokerPort, BrokerUnavailable, Delivery
from mstc_worker.protocol import PROGRESS_TYPE, Reply, Status, progress_body, reply_body
from mstc_worker.settings import Settings

__all__ = ["Replier", "crash_reply", "internal_error_reply"]

# The service's log lines, moved here with the code that writes them, keep their logger.
log = logging.getLogger("mstc_worker.service")


def crash_reply(reason: str) -> Reply:
    """The reply to a request that crashed its handler twice: an error, in the Java form."""
    return Reply(
        status=Status.ERROR,
        reason="WorkerCrashed",
        error=reason,
        error_type="WorkerCrashed",
        result=f"WorkerCrashed: {reason}",
    )


def internal_error_reply(reason: str) -> Reply:
    """The reply to a request the worker failed reading: an error, in the Java form."""
    return Reply(
        status=Status.ERROR,
        reason="InternalError",
        error=reason,
        error_type="InternalError",
        result=f"InternalError: {reason}",
    )


class Replier:
    """Publishes replies, progress and dead letters on the service's broker connection."""

    def __init__(self, settings: Settings, *, broker: BrokerPort, metrics: Metrics) -> None:
        self._settings = settings
        self._broker = broker
        self._metrics = metrics

    def reply(self, reply: Reply, reply_to: str, correlation_id: str | None) -> None:
        queue = reply_to or self._settings.results_queue
        self._broker.publish(queue, reply_body(reply), correlation_id=correlation_id)
        self._metrics.reply_sent()

    def progress(
        self, reply_to: str, correlation_id: str | None, job_name: str, state: str
    ) -> None:
        """Tell a waiting client where its Job stands; never retried, never re-routed."""
        if not reply_to:
            return
        body = progress_body(job_name, state, self._settings.namespace)
        try:
            self._broker.publish(reply_to, body, correlation_id=correlation_id,
                                 message_type=PROGRESS_TYPE, fallback=False)  # fmt: skip
        except BrokerUnavailable as exc:
            # Re-raising would run the whole hand-over again (an ack, a reply) on the next
            # connection; a progress message is not worth that.
            log.info("job %s: progress %r not sent: %s", job_name, state, exc)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = {
            **delivery.headers,
            "x-mstc-reason": reason,
            "x-mstc-reply-to": delivery.reply_to or "",
            "x-mstc-correlation-id": delivery.correlation_id or "",
        }
        self._broker.publish(
            self._settings.dead_letter_queue,
            delivery.body,
            correlation_id=delivery.correlation_id,
            headers=headers,
        )
        log.error("request %s dead-lettered: %s", delivery.correlation_id, reason)
