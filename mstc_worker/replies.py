"""The record of each answered request, kept after its Job is gone, to answer it again.

Owns what makes a request sent again after its Job finished, was answered and was deleted
by its TTL get the same answer instead of a second run: the worker process that finishes a
Job writes its outcome here, keyed by the request id (`manifest.request_identity`), before
the reply goes out; the process that would create a Job for a request looks here first.
A Job that still exists is found by its name instead (see `runner`), so this record only
has to outlive the Job's TTL, and is kept `reply_record_seconds` (two days by default).

Where: the worker's own bucket (`reply_records_bucket`), written with the worker's own
credentials. Requests may not name that bucket (`protocol.parse_request` refuses it), so
no Job's credentials, which are scoped to the buckets its request names, can read or forge
a record. Expiry: the age recorded inside is checked on every read; a lifecycle rule on
the bucket deletes records a day or so later, so that the bucket does not grow forever.

Best effort both ways: a record that cannot be written or read costs at most a second
run of a request that was already answered, never a request without an answer.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.protocol import Outcome
from mstc_worker.settings import Settings
from mstc_worker.storage import Storage

__all__ = ["ReplyRecords"]

log = logging.getLogger(__name__)

_FORMAT = 1
# Only ids made by `request_identity`: an older Job's id (a bare correlation id) could be
# anything, and two clients' "1" must not share a record any more than a Job.
_REQUEST_ID = re.compile(r"[0-9a-f]{64}")


class ReplyRecords:
    """Reads and writes the records of answered requests in the worker's own bucket."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._storage = storage
        self._bucket = settings.reply_records_bucket
        self._keep = timedelta(seconds=settings.reply_record_seconds)

    def save(self, request_id: str, outcome: Outcome, *, now: datetime | None = None) -> bool:
        """Record the outcome the request is answered with; False if it could not be."""
        if not _REQUEST_ID.fullmatch(request_id):
            return False
        answered_at = (now or datetime.now(UTC)).astimezone(UTC)
        record = {
            "format": _FORMAT,
            "answeredAt": answered_at.isoformat(),
            "outcome": outcome.model_dump(mode="json", by_alias=True),
        }
        # Whole days past the keeping time: the lifecycle rule is a backstop, not the rule.
        days = math.ceil(self._keep.total_seconds() / 86_400) + 1
        try:
            self._storage.put_private(self._bucket, _object_name(request_id),
                                      json.dumps(record).encode(), expire_days=days)  # fmt: skip
        except (TransientError, PermanentError) as exc:
            log.warning("request %s: reply not recorded (sent again, it would run again): %s",
                        request_id, exc)  # fmt: skip
            return False
        return True

    def find(self, request_id: str, *, now: datetime | None = None) -> Outcome | None:
        """The outcome this request was answered with, if it was within the keeping time."""
        if not _REQUEST_ID.fullmatch(request_id):
            return None
        try:
            data = self._storage.get_private(self._bucket, _object_name(request_id))
        except (TransientError, PermanentError) as exc:
            log.warning("request %s: reply record not readable, going on without: %s",
                        request_id, exc)  # fmt: skip
            return None
        if data is None:
            return None
        try:
            record = json.loads(data)
            answered_at = datetime.fromisoformat(record["answeredAt"])
            outcome = Outcome.model_validate(record["outcome"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            log.warning("request %s: reply record unreadable, ignored: %s", request_id, exc)
            return None
        if (now or datetime.now(UTC)) - answered_at > self._keep:
            return None
        return outcome


def _object_name(request_id: str) -> str:
    return f"replies/{request_id}.json"
