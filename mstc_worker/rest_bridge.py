"""The Java REST controller's execute call, bridged onto the work queue.

Owns what a REST request is on its way through the worker, and the answer the Java
controller gave: a REST request is not let in by a back door. It is published to the work
queue with a reply queue of the connection's own and a fresh correlation id, like any
client's, and its caller waits for the reply; so the cap, the acks and a request's identity
are the AMQP ones (see `service` and `admission`), and a REST request is answered the way a
queued one is. Each caller holds one of the HTTP server's threads while it waits, so at most
`http_max_waiting` of them wait at a time, and none longer than the request's own timeout
plus five minutes.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from concurrent.futures import Future, InvalidStateError

from mstc_worker.errors import RequestRejected
from mstc_worker.metrics import Metrics
from mstc_worker.ports import BrokerPort
from mstc_worker.protocol import Status, parse_request, rejection_reply
from mstc_worker.settings import Settings

__all__ = ["RestBridge"]


class RestBridge:
    """Runs REST requests through the work queue; its `execute` is the HTTP port's."""

    def __init__(self, settings: Settings, *, broker: BrokerPort, metrics: Metrics) -> None:
        self._settings = settings
        self._broker = broker
        self._metrics = metrics
        self._callers = threading.BoundedSemaphore(settings.http_max_waiting)

    def execute(self, body: bytes) -> tuple[int, str]:
        """Run one REST request through the work queue; (HTTP status, Java `result` text)."""
        try:
            request = parse_request(body, settings=self._settings)
        except RequestRejected as exc:
            self._metrics.request_done(Status.REJECTED.value, None)
            return 400, rejection_reply(exc, body).result
        # Each caller holds a server thread while it waits: a bound keeps them from piling up.
        if not self._callers.acquire(blocking=False):
            limit = self._settings.http_max_waiting
            return 503, (f"Busy: {limit} REST requests are waiting already (MSTC_HTTP_MAX_WAITING);"
                         " retry later, or send the request through the queue")  # fmt: skip
        try:
            return self._call_through_queue(body, request.timeout_minutes * 60 + 300)
        finally:
            self._callers.release()

    def _call_through_queue(self, body: bytes, limit: float) -> tuple[int, str]:
        """Publish the request to the work queue and wait up to `limit` s for its reply."""
        answer: Future[bytes | None] = Future()
        correlation_id = uuid.uuid4().hex  # a fresh id: the request's identity, as any client's
        call = functools.partial(self._broker.call, self._settings.work_queue, body,
                                 correlation_id=correlation_id,
                                 on_reply=functools.partial(_answer, answer))  # fmt: skip
        self._broker.submit(call)
        try:
            reply = answer.result(timeout=limit)
        except TimeoutError:
            if answer.cancel():  # a reply that comes later goes to the results queue
                return 504, f"TimeoutError: no outcome within {limit:.0f} s"
            reply = answer.result()
        if reply is None:
            return 503, ("BrokerUnavailable: the connection to RabbitMQ was lost while this "
                         "request waited; it may still run, and its reply then goes to the "
                         f"results queue {self._settings.results_queue} (correlation id "
                         f"{correlation_id})")  # fmt: skip
        return _http_answer(reply)


def _answer(answer: Future[bytes | None], reply: bytes | None) -> bool:
    """Hand a reply to its waiting REST caller; False if the caller has gone."""
    try:
        answer.set_result(reply)
    except InvalidStateError:  # cancelled: the caller timed out
        return False
    return True


def _http_answer(reply: bytes) -> tuple[int, str]:
    """The Java controller's answer to a reply body: its `result`; 400 rejected, 500 error."""
    data = json.loads(reply)
    status = {Status.REJECTED.value: 400, Status.ERROR.value: 500}.get(data.get("status"), 200)
    return status, str(data.get("result", ""))
