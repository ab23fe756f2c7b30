"""Stalled work, found continuously: a thread per replica scans the history and keeps the flags.

Every `MSTC_FLOW_STALL_SCAN_SECONDS` the scan judges the history as it is now (not when a page
is loaded) and syncs three kinds of flag (`store.flags`):

* `pending`: a Job accepted more than `MSTC_FLOW_PENDING_FLAG_SECONDS` ago that has no
  running pod yet (unschedulable, stuck pulling its image). Since: its acceptance.
* `overdue`: a running Job past the duration its catalog entry expects (`expectedSeconds`;
  the Job is the entry's by its correlation id `flow:<firing>`). A request's `timeOut` is a
  hard limit the cluster enforces, not an expectation, so a Job without an entry declaring
  one is never overdue. Since: its pod's start.
* `quiet-replica`: a worker replica whose last heartbeat is older than three of its own
  heartbeat intervals and that did not say it stops. Since: its last heartbeat.

A flag clears when the scan no longer finds its cause (the Job runs or ends, the replica
beats again). Every replica scans; the flags' key makes their results one (see
`store.flags`), so no replica has to be elected. A failed scan is logged and tried again at
the next tick: flags must never stop the service.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mstc_flow.errors import FlowError
from mstc_flow.settings import FlowSettings
from mstc_flow.store.flags import OVERDUE, PENDING, QUIET_REPLICA, Flags, Found, StallFacts

__all__ = ["QUIET_AFTER_INTERVALS", "StallScanner", "judge"]

log = logging.getLogger(__name__)

QUIET_AFTER_INTERVALS = 3

# The seconds a Job of this correlation id is expected to run; None = no expectation.
ExpectedOf = Callable[[str | None], float | None]
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def judge(
    facts: StallFacts, now: datetime, pending_seconds: float, expected_of: ExpectedOf
) -> dict[str, list[Found]]:
    """What is stalled at `now`, by kind (pure: the rules, apart from the store)."""
    pending_bound = now - timedelta(seconds=pending_seconds)
    found: dict[str, list[Found]] = {PENDING: [], OVERDUE: [], QUIET_REPLICA: []}
    for request_id, accepted_at in facts.pending:
        if accepted_at <= pending_bound:
            detail = f"accepted, without a running pod after {pending_seconds:g} s"
            found[PENDING].append(Found(request_id, accepted_at, detail))
    for job in facts.running:
        expected = expected_of(job.correlation_id)
        if expected and job.running_at + timedelta(seconds=expected) <= now:
            detail = f"running past the {expected:g} s its catalog entry expects"
            found[OVERDUE].append(Found(job.request_id, job.running_at, detail))
    for replica, last_seen, interval in facts.replicas:
        if interval and last_seen + timedelta(seconds=QUIET_AFTER_INTERVALS * interval) <= now:
            detail = (f"no heartbeat for more than {QUIET_AFTER_INTERVALS} intervals of "
                      f"{interval:g} s, and it did not say it stops")  # fmt: skip
            found[QUIET_REPLICA].append(Found(replica, last_seen, detail))
    return found


class StallScanner:
    """The scanning thread of one replica: `start`, `stop`; `scan` is one pass."""

    def __init__(
        self, settings: FlowSettings, flags: Flags, expected_of: ExpectedOf, *,
        clock: Clock = _now,
    ) -> None:  # fmt: skip
        self._settings = settings
        self._flags = flags
        self._expected_of = expected_of
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mstc-flow-stalled", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def scan(self) -> None:
        """One pass: judge the history now and sync every kind of flag."""
        now = self._clock()
        facts = self._flags.stalled_candidates()
        pending_seconds = self._settings.pending_flag_seconds
        for kind, found in judge(facts, now, pending_seconds, self._expected_of).items():
            self._flags.sync(kind, found, now)

    def _run(self) -> None:
        while not self._stopping.wait(self._settings.stall_scan_seconds):
            try:
                self.scan()
            except FlowError as exc:
                log.warning("stalled scan failed, trying again next time: %s", exc)
            except Exception:
                # A bug must not end the scanning for good; the traceback says what to fix.
                log.exception("stalled scan failed unexpectedly")
