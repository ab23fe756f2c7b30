"""The service's side of control messages: read them, hand them to a process, answer, ack.

Owns the life of one control message in the main process (on the connection's thread). A
message that cannot be read is answered `invalid` and acked at once, so a bad message never
loops through the queue or takes the consumer down. A valid cancel goes to a worker process
(the main process never waits on Kubernetes, see `runner`); its answer is published to the
message's `reply_to` (confirmed, never re-routed: nobody but the canceller wants it) and only
then is the message acked, so a replica that dies first leaves it for another. A message
whose process died is answered `error` (send it again) rather than retried: it might be what
killed the process.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from mstc_worker.control import (
    ANSWER_TYPE,
    CancelAnswer,
    ControlRejected,
    answer_body,
    parse_control,
)
from mstc_worker.messages import CancelAnswered, CancelJob
from mstc_worker.ports import BrokerPort, Delivery, PoolPort
from mstc_worker.runner import shard_of

__all__ = ["ControlDesk"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Pending:
    delivery: Delivery
    worker: int
    incarnation: int


class ControlDesk:
    """Control messages in flight in one replica, from delivery to ack."""

    def __init__(self, *, broker: BrokerPort, pool: PoolPort) -> None:
        self._broker = broker
        self._pool = pool
        self._keys = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    def on_delivery(self, delivery: Delivery) -> None:
        """A control message arrived (connection thread)."""
        try:
            command = parse_control(delivery.body)
        except ControlRejected as exc:
            log.info("control message %s refused: %s", delivery.correlation_id, exc)
            self._answer(delivery, CancelAnswer(status="invalid", message=str(exc)))
            return
        except Exception as exc:  # a bug must cost this message, not the consumer
            log.exception("control message %s could not be read", delivery.correlation_id)
            text = f"The worker failed reading this control message ({type(exc).__name__})."
            self._answer(delivery, CancelAnswer(status="error", message=text))
            return
        key = next(self._keys)
        worker = shard_of(command.job_name, self._pool.size)
        incarnation = self._pool.send(worker, CancelJob(key, command))
        self._pending[key] = _Pending(delivery, worker, incarnation)

    def answered(self, message: CancelAnswered) -> None:
        """A process carried out (or refused) a cancel: tell the canceller, then ack."""
        pending = self._pending.pop(message.key, None)
        if pending is not None:
            self._answer(pending.delivery, message.answer)

    def worker_died(self, worker: int, incarnation: int) -> None:
        """Answer the cancels a dead process held: the canceller may send them again."""
        lost = [key for key, p in self._pending.items()
                if (p.worker, p.incarnation) == (worker, incarnation)]  # fmt: skip
        for key in lost:
            pending = self._pending.pop(key)
            text = "The worker process carrying out this cancel died; send the cancel again."
            self._answer(pending.delivery, CancelAnswer(status="error", message=text))

    def _answer(self, delivery: Delivery, answer: CancelAnswer) -> None:
        if not self._broker.holds(delivery):
            return  # its channel is gone: the broker delivers it again (a cancel is idempotent)
        if delivery.reply_to:
            # BrokerUnavailable goes up unacked: the message returns to the queue with the
            # channel and is answered then (a cancel is idempotent).
            self._broker.publish(delivery.reply_to, answer_body(answer),
                                 correlation_id=delivery.correlation_id,
                                 message_type=ANSWER_TYPE, fallback=False)  # fmt: skip
        else:
            log.info("control message %s has no reply_to; answer not sent: %s",
                     delivery.correlation_id, answer.message)  # fmt: skip
        self._broker.ack(delivery)
