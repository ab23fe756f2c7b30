"""A `Service` on the in-memory broker, pool and HTTP port of `fakes`, driven one step at a time.

The rig wires what `Service.run` wires (the broker's consumer and stop event, the pump from the
pool to the broker's thread) but starts no thread of its own: the test's thread plays the
connection's thread, and `settle()` runs whatever is due until nothing is. Only
`Service.stop()` starts a thread (the drain), as it does in production; its end shows as
`broker.stop_requested`.
"""

from __future__ import annotations

import json
from typing import Any

from mstc_worker.metrics import Metrics
from mstc_worker.ports import HttpEndpoints
from mstc_worker.service import Service
from mstc_worker.settings import Settings
from tests.support.fakes import FakeBroker, FakeHttp, FakePool, Journal, Published


class ServiceRig:
    """One service replica with fakes around it; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.journal: Journal = []
        self.broker = FakeBroker(prefetch=settings.concurrency, journal=self.journal,
                                 results_queue=settings.results_queue)  # fmt: skip
        self.pool = FakePool(settings.processes, journal=self.journal)
        self.metrics = Metrics(process_metrics=False)
        self.service = Service(settings, broker=self.broker, pool=self.pool,
                               http=self._make_http, metrics=self.metrics)  # fmt: skip
        # What Service.run hands the broker; the private names are the service's own wiring.
        self.broker.attach(self.service._stop, self.service._on_delivery)

    def _make_http(self, endpoints: HttpEndpoints) -> FakeHttp:
        self.http = FakeHttp(endpoints)
        return self.http

    def settle(self, *, max_rounds: int = 100) -> None:
        """Run submitted work, carry what the processes said, dispatch deliveries; repeat.

        A service that never settles (a message requeued and redelivered forever) fails the
        test after `max_rounds` instead of hanging it.
        """
        for _ in range(max_rounds):
            done = self.broker.run_pending()
            self.service._pump()  # ends when the fake pool has nothing more to say
            done += self.broker.run_pending()
            done += self.broker.dispatch()
            if not done:
                return
        raise AssertionError(
            f"the service did not settle in {max_rounds} rounds: {self.journal[-6:]}"
        )

    def request(self, body: bytes, **properties: Any) -> None:
        """A client publishes a request; the service takes what it will."""
        self.broker.enqueue(body, **properties)
        self.settle()

    def replies_to(self, queue: str) -> list[dict[str, Any]]:
        """The reply bodies published to `queue`, decoded."""
        return [json.loads(p.body) for p in self.broker.published_to(queue)]

    def dead_letters(self) -> list[Published]:
        return self.broker.published_to(self.settings.dead_letter_queue)

    def requests_done(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("mstc_requests_total", {"outcome": outcome})
        return value or 0.0

    def events(self, *kinds: str) -> list[tuple[Any, ...]]:
        """The journal's entries of the given kinds, in order."""
        return [entry for entry in self.journal if entry[0] in kinds]
