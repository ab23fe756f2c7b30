"""The recorder: turns the inbox's job events and worker heartbeats into history.

Owns deciding which inbox messages are the history's (`mstc.job.*` events, `mstc.worker.*`
heartbeats), decoding them, and dropping the ones that cannot be recorded: a body that is
not a JSON object, or an event without its ids, is logged and acknowledged, because a
message that can never be recorded must not come back forever; nothing in a body can make
it raise anything but `TransientError` (the store is down: requeue and try again later).
Also the retention rule (`purge_expired`), applied by the service on a timer.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from mstc_flow.errors import PermanentError
from mstc_flow.store.history import History

__all__ = ["Recorder", "purge_expired"]

log = logging.getLogger(__name__)

JOB_PREFIX = "mstc.job."
WORKER_PREFIX = "mstc.worker."


class Recorder:
    """Records the history's messages from the inbox into `History`."""

    def __init__(self, history: History) -> None:
        self._history = history

    @staticmethod
    def wants(routing_key: str) -> bool:
        """Whether a message with this routing key is one the recorder records."""
        return routing_key.startswith((JOB_PREFIX, WORKER_PREFIX))

    def handle(self, routing_key: str, body: bytes) -> bool:
        """Record one message; False when it is not the history's (someone else's to handle).

        True also for a message dropped as unrecordable (logged): the caller acks it.
        Raises TransientError when the store is unreachable (the caller requeues).
        """
        if not self.wants(routing_key):
            return False
        document = _decode(body)
        if document is None:
            log.warning("Dropped a message on %s: its body is not a JSON object", routing_key[:200])
            return True
        try:
            if routing_key.startswith(JOB_PREFIX):
                fresh = self._history.record_event(document)
                log.debug("Recorded %s (%s)", _id(document), "new" if fresh else "repeat")
            else:
                self._history.record_heartbeat(document)
        except PermanentError as exc:
            log.warning("Dropped a message on %s: %s", routing_key[:200], exc)
        except RecursionError:  # nested too deep to store again, though it could be read
            log.warning("Dropped a message on %s: nested too deep", routing_key[:200])
        return True


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _id(document: dict[str, Any]) -> str:
    return str(document.get("eventId"))[:200]


def purge_expired(history: History, retention_days: float, now: datetime) -> int:
    """Delete history finished more than `retention_days` before `now` (0 keeps all);
    returns how many jobs went."""
    if retention_days <= 0:
        return 0
    removed = history.purge(now - timedelta(days=retention_days))
    if removed:
        log.info("Purged %d jobs finished more than %g days ago", removed, retention_days)
    return removed
