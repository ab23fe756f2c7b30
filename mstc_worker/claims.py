"""Claims that hold as long as their holder works: a worker process's claims, renewed.

A worker process claims a finished Job (`KubeClient.claim`) before it reads the log, stores
it and replies; a claim older than `claim_stale_seconds` counts as its holder's death, and
another worker may take the Job over. Finishing can take longer than that (log reads with
long timeouts and retries, storage retries, a broker outage before the reply), so the
holder renews every claim it holds every third of the stale time, from the claim until
the Job is let go after its reply. Owns that loop and what a lost claim means: nothing
already sent is taken back, but it is logged, as another worker may now reply too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.kube import KubeClient

__all__ = ["ClaimKeeper"]

log = logging.getLogger(__name__)


class ClaimKeeper:
    """Renews `holder`'s claims on the Jobs it was told to `hold`, until `drop` or `stop`.

    `on_trouble()` hears of each renewal the API server could not take (for the metrics).
    """

    def __init__(
        self,
        kube: KubeClient,
        holder: str,
        *,
        stale_after_s: float,
        stop: threading.Event,
        on_trouble: Callable[[], None],
        name: str = "renew",
    ) -> None:
        self._kube, self._holder = kube, holder
        self._interval = stale_after_s / 3  # three tries before the claim can go stale
        self._stop = stop
        self._on_trouble = on_trouble
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, job_name: str) -> None:
        """Renew the claim on `job_name` from now on (it was just claimed)."""
        with self._lock:
            self._held.add(job_name)

    def drop(self, job_name: str) -> None:
        """Stop renewing: the Job is let go, gone, or no longer being finished here."""
        with self._lock:
            self._held.discard(job_name)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                held = sorted(self._held)
            for job_name in held:
                self._renew(job_name)

    def _renew(self, job_name: str) -> None:
        try:
            kept = self._kube.renew_claim(job_name, self._holder)
        except (TransientError, PermanentError) as exc:
            self._on_trouble()
            log.warning("job %s: claim not renewed this round: %s", job_name, exc)
            return
        if kept:
            return
        with self._lock:
            was_held = job_name in self._held
            self._held.discard(job_name)
        if was_held:  # not dropped meanwhile (a release that just finished)
            log.error("job %s: claim lost (taken over, or the Job is gone) while finishing; "
                      "another worker may reply too", job_name)  # fmt: skip
