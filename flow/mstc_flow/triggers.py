"""The trigger engine: inbox messages and by-hand firings become firings, and firings Jobs.

Two halves, joined by the store:

* Recording (`on_message`, `fire`, `retry`), on the caller's thread: for every catalog entry
  whose trigger matches the message (all of them, not only the last), one firing row with the
  rendered request, idempotent by (source_key, entry). The inbox acks the message only after
  this returns, so a crash before the ack redelivers it and the unique key makes the second
  delivery fire nothing. A template that cannot be filled parks the firing with the reason.
  Job events also settle firings: `accepted` notes the made Job's name (replace cancels by
  it), a final event whose correlationId is `flow:<id>` finishes the firing and frees a slot.
* Submitting (`Dispatcher`, one thread per replica): claims pending firings (one replica
  wins each), applies the entry's concurrency (allow; skip when one runs; replace cancels the
  running Jobs first) and max_in_flight (over the bound the firing stays pending until a final
  event frees a slot), submits with `settings.submit_attempts` tries and backoff, then parks.
  A periodic pass picks up what a crash or a full slot left pending.

Source keys: a job event's eventId (body, else its message_id); any other message's AMQP
message_id; else a fresh uuid. MQTT publishes carry no message id, so for them the window is
real: a message redelivered after a crash between commit and ack fires again (QoS 1 is
at-least-once; an id in the payload does not help since payloads are opaque). Publishers that
need exactly once publish over AMQP with a message_id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from mstc_client.catalog import Catalog, Concurrency, Entry
from mstc_client.errors import TemplateError
from mstc_flow.broker import InboxMessage
from mstc_flow.errors import NotFound, TransientError
from mstc_flow.settings import FlowSettings
from mstc_flow.store.firings import PENDING, Firing, Firings, firing_id_of, new_firing_id

__all__ = ["Triggers", "mqtt_topic"]

log = logging.getLogger(__name__)

FINAL_PREFIX = "mstc.job.final."
ACCEPTED_PREFIX = "mstc.job.progress.accepted."


class SubmitPort(Protocol):
    def submit(self, correlation_id: str, request: dict[str, Any]) -> None: ...
    def cancel(self, job_name: str, reason: str, timeout: float = 30.0) -> dict[str, Any]: ...


def mqtt_topic(routing_key: str) -> str:
    """The topic as an MQTT user writes it (RabbitMQ's plugin maps `/` to `.`)."""
    return routing_key.replace(".", "/")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def source_key_of(message: InboxMessage, event: dict[str, Any] | None) -> str:
    if event is not None and message.routing_key.startswith("mstc.job."):
        event_id = event.get("eventId")
        if isinstance(event_id, str) and event_id:
            return f"event:{event_id}"
    if message.message_id:
        return f"message:{message.message_id}"
    return f"uuid:{uuid.uuid4().hex}"


class Triggers:
    """Records firings from messages and by hand; its `Dispatcher` submits them."""

    def __init__(self, settings: FlowSettings, firings: Firings, submitter: SubmitPort) -> None:
        self._settings = settings
        self._firings = firings
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()
        self.dispatcher = Dispatcher(settings, firings, submitter, self.entry_or_none)

    # --- the catalog --------------------------------------------------------------------------

    def set_catalog(self, catalog: Catalog) -> None:
        with self._lock:
            self._catalog = catalog

    @property
    def catalog(self) -> Catalog | None:
        with self._lock:
            return self._catalog

    def entry_or_none(self, name: str) -> Entry | None:
        catalog = self.catalog
        try:
            return None if catalog is None else catalog.entry(name)
        except KeyError:
            return None

    # --- recording ----------------------------------------------------------------------------

    def on_message(self, message: InboxMessage) -> None:
        """Settle firings from a job event, then record the firings the message makes."""
        event = _json_object(message.body) if message.routing_key.startswith("mstc.job.") else None
        if event is not None:
            self._settle(message.routing_key, event)
        catalog = self.catalog
        entries = [] if catalog is None else catalog.matching(message.routing_key)
        if not entries:
            return
        source_key = source_key_of(message, event)
        kind = "chain" if event is not None else "trigger"
        topic = mqtt_topic(message.routing_key)
        for entry in entries:
            self._record(entry, kind, topic, source_key, message.body)

    def fire(self, entry_name: str, payload: bytes) -> Firing:
        """Fire an entry by hand (API, `mstc catalog fire`); NotFound if there is none."""
        entry = self.entry_or_none(entry_name)
        if entry is None:
            raise NotFound(f"The catalog has no entry {entry_name!r}.")
        topic = entry.trigger.topic if entry.trigger is not None else ""
        firing = self._record(entry, "manual", topic, f"manual:{uuid.uuid4().hex}", payload)
        assert firing is not None  # a fresh source key cannot collide
        return firing

    def retry(self, request_id: str, request: dict[str, Any], entry: str = "") -> Firing:
        """A new firing sending `request` (as the history recorded it) again, linked to it."""
        first = self._firings.by_request_id(request_id)
        name = entry or (first.entry if first is not None else "") or "-"
        firing_id = new_firing_id()
        firing = self._firings.add(
            firing_id=firing_id, entry=name, kind="retry",
            topic=first.topic if first is not None else "", source_key=f"retry:{firing_id}",
            payload=first.payload if first is not None else b"", request=request,
            retry_of=request_id,
        )  # fmt: skip
        assert firing is not None
        self.dispatcher.wake(firing.id)
        return firing

    def _record(
        self, entry: Entry, kind: str, topic: str, source_key: str, payload: bytes
    ) -> Firing | None:
        firing_id = new_firing_id()
        request: dict[str, Any] | None
        try:
            request = _with_bucket(entry.render(payload, topic, firing_id), self._settings)
            state, error = PENDING, None
        except TemplateError as exc:
            request, state, error = None, "parked", f"The request template failed: {exc}"
        firing = self._firings.add(
            firing_id=firing_id, entry=entry.name, kind=kind, topic=topic,
            source_key=source_key, payload=payload, request=request, state=state,
            last_error=error,
        )  # fmt: skip
        if firing is None:
            log.info("entry %s fired already for %s (a redelivery)", entry.name, source_key)
        elif firing.state == PENDING:
            log.info("entry %s fired: firing %s (%s)", entry.name, firing.id, kind)
            self.dispatcher.wake(firing.id)
        else:
            log.warning("entry %s parked firing %s: %s", entry.name, firing.id, error)
        return firing

    def _settle(self, routing_key: str, event: dict[str, Any]) -> None:
        firing_id = firing_id_of(event.get("correlationId"))
        if firing_id is None:
            return
        request_id, job_name = event.get("requestId"), event.get("jobName")
        if routing_key.startswith(ACCEPTED_PREFIX) and isinstance(request_id, str):
            self._firings.note_accepted(firing_id, request_id, _text(job_name))
        elif routing_key.startswith(FINAL_PREFIX):
            state = str(event.get("event") or routing_key.split(".")[3])
            done = self._firings.mark_finished(firing_id, state, _text(request_id),
                                               _text(job_name))  # fmt: skip
            if done is not None:
                self.dispatcher.slot_freed()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Dispatcher:
    """The submitting thread: claims, concurrency, bounds, attempts, parking."""

    def __init__(
        self, settings: FlowSettings, firings: Firings, submitter: SubmitPort,
        entry_of: Callable[[str], Entry | None],
    ) -> None:  # fmt: skip
        self._settings = settings
        self._firings = firings
        self._submitter = submitter
        self._entry_of = entry_of
        self._stale = timedelta(seconds=settings.claim_stale_seconds)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mstc-flow-submit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self, firing_id: str) -> None:
        self._queue.put(firing_id)

    def slot_freed(self) -> None:
        self._queue.put("")  # "" = look at every pending firing now

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=self._settings.pending_scan_seconds)
            except queue.Empty:
                item = ""
            if item is None:
                continue
            try:
                if item:
                    self.dispatch(item)
                else:
                    self.scan()
            except TransientError as exc:
                log.warning("submitting paused: %s", exc)  # the next scan tries again
                self._stopping.wait(self._settings.submit_backoff_seconds)
            except Exception:
                # A bug must not end submitting for good: the firing stays pending, and the
                # traceback says what to fix.
                log.exception("submitting %s failed unexpectedly", item or "pending firings")

    def scan(self) -> None:
        for firing in self._firings.pending(self._stale):
            if self._stopping.is_set():
                return
            self.dispatch(firing.id)

    def dispatch(self, firing_id: str) -> None:
        """Claim one pending firing and submit it, skip it, or leave it for a free slot."""
        if not self._firings.claim(firing_id, self._settings.replica_id, self._stale):
            return  # another replica has it, or it is no longer pending
        firing = self._firings.get(firing_id)
        if firing is None or firing.request is None:
            return
        entry = self._entry_of(firing.entry) if firing.kind != "retry" else None
        if entry is not None and not self._admit(firing, entry):
            return
        self._submit(firing)

    def _admit(self, firing: Firing, entry: Entry) -> bool:
        running = self._firings.running(entry.name)
        if running and entry.concurrency is Concurrency.SKIP:
            busy = ", ".join(r.id for r in running)
            self._firings.mark_skipped(firing.id, f"entry {entry.name} still runs: {busy}")
            log.info("entry %s skipped firing %s (still running)", entry.name, firing.id)
            return False
        if running and entry.concurrency is Concurrency.REPLACE:
            return self._replace(firing, entry, running)
        if entry.max_in_flight and len(running) >= entry.max_in_flight:
            self._firings.release(firing.id)  # stays pending; a final event wakes it
            return False
        return True

    def _replace(self, firing: Firing, entry: Entry, running: list[Firing]) -> bool:
        for old in running:
            name = old.job_name or str((old.request or {}).get("jobName") or "")
            try:
                answer = self._submitter.cancel(name, f"replaced by firing {firing.id}")
            except TransientError as exc:
                self._firings.release(firing.id, error=f"cancel of {name!r} failed: {exc}")
                return False
            log.info("entry %s: cancelled %s for %s: %s", entry.name, name, firing.id,
                     answer.get("status"))  # fmt: skip
        return True

    def _submit(self, firing: Firing) -> None:
        attempts = self._settings.submit_attempts
        delay = self._settings.submit_backoff_seconds
        for attempt in range(1, attempts + 1):
            try:
                self._submitter.submit(firing.correlation_id, firing.request or {})
            except TransientError as exc:
                log.warning("firing %s: attempt %d of %d failed: %s", firing.id, attempt,
                            attempts, exc)  # fmt: skip
                if attempt == attempts:
                    self._firings.mark_parked(
                        firing.id, f"Not submitted after {attempts} attempts: {exc}"
                    )
                    return
                if self._stopping.wait(delay):
                    self._firings.release(firing.id, error=str(exc), attempted=True)
                    return  # stopping: the next replica life submits it
                delay = min(30.0, delay * 2)
            else:
                self._firings.mark_submitted(firing.id)
                log.info("firing %s submitted (entry %s)", firing.id, firing.entry)
                return


def _with_bucket(request: dict[str, Any], settings: FlowSettings) -> dict[str, Any]:
    """The request, with the flow's bucket (MSTC_BUCKET) when it names none.

    The worker needs an input bucket and the MQTT job listener's CSV has no column for one.
    """
    if not request.get("inputBucket") and not request.get("inputBucketUrl"):
        request["inputBucket"] = settings.client.bucket
    return request
