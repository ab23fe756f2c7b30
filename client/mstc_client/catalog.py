"""The catalog's model: entries that turn a message on a topic into a worker request.

A catalog is what `mstc-flow` fires from and what `mstc catalog validate` checks offline, so
the model lives here, in the client everybody installs. It is pure: parsing a text (YAML, or
the MQTT job listener's CSV, in `catalog_files`) gives a `Catalog`; nothing here reads files
or talks to servers.

Topics: a trigger is written as an MQTT filter (`a/b/+`, `a/#`) or as an AMQP binding key
(`a.b.*`). RabbitMQ's MQTT plugin publishes MQTT topics on `amq.topic` with `/` turned into
`.`, so both forms become one AMQP binding key and match by AMQP topic rules: `*` is exactly
one word, `#` zero or more.

Templates: every string in an entry's request may hold `{{ name }}` placeholders, filled when
the entry fires: `payload` (the message text), `payload.a.b` (a field of a JSON payload, by
key or list index), `topic` (MQTT form), `entry`, `firing`. A string that is one placeholder
and nothing else takes the value's JSON type (so `"{{ payload.n }}"` can be a number). Nothing
is evaluated: a placeholder names a value, and an unknown name or path is a `TemplateError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mstc_client.errors import TemplateError

__all__ = [
    "ENTRY_ENV",
    "FIRING_ENV",
    "PAYLOAD_ENV",
    "PLACEHOLDER",
    "TOPIC_ENV",
    "Catalog",
    "Concurrency",
    "Entry",
    "Trigger",
    "binding_key_of",
    "digest_of",
    "walk",
]

PAYLOAD_ENV = "MSTC_TRIGGER_PAYLOAD"
TOPIC_ENV = "MSTC_TRIGGER_TOPIC"
ENTRY_ENV = "MSTC_FLOW_ENTRY"
FIRING_ENV = "MSTC_FLOW_FIRING"

# A template placeholder, `{{ name }}` or `{{ name.path.to.value }}`; pipelines use the same form.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}\}")


class Concurrency(StrEnum):
    """What an entry does when it fires while its last run still goes."""

    ALLOW = "allow"  # run both
    SKIP = "skip"  # drop the new firing (recorded as skipped)
    REPLACE = "replace"  # cancel the running one, then run the new one


def binding_key_of(topic: str) -> str:
    """The AMQP binding key for a trigger written in MQTT (`/`, `+`) or AMQP (`.`, `*`) form."""
    if "/" in topic or "+" in topic:
        return ".".join("*" if level == "+" else level for level in topic.split("/"))
    return topic


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Trigger:
    """Where an entry listens: `topic` as written, `binding_key` as bound on amq.topic."""

    topic: str
    binding_key: str

    @classmethod
    def of(cls, topic: str) -> Trigger:
        return cls(topic, binding_key_of(topic))

    def matches(self, routing_key: str) -> bool:
        """Whether a message published with `routing_key` reaches this binding."""
        return _match(self.binding_key.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # Zero or more words: try every split (keys are short, so this stays cheap).
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


@dataclass(frozen=True)
class Entry:
    """One catalog entry: a name, what fires it, and the request it sends."""

    name: str
    trigger: Trigger | None
    request: Mapping[str, Any]
    concurrency: Concurrency = Concurrency.ALLOW
    max_in_flight: int = 0  # 0 = no bound
    line: int = 0
    # How long one of its Jobs is expected to run; past it the flow flags the Job `overdue`.
    # 0 = no expectation (a request's `timeOut` is a hard limit the cluster enforces, not one).
    expected_seconds: float = 0

    def render(self, payload: bytes, topic: str, firing_id: str) -> dict[str, Any]:
        """The request to send for one firing: the template filled, the trigger's env added."""
        text = payload.decode("utf-8", errors="replace")
        values = _Values(text, topic, self.name, firing_id)
        request: dict[str, Any] = _fill(dict(self.request), values)
        # A whole-placeholder value keeps its JSON type, but env values must be texts.
        env = {
            k: v if isinstance(v, str) else json.dumps(v)
            for k, v in (request.get("env") or {}).items()
        }
        env.update(
            {PAYLOAD_ENV: text, TOPIC_ENV: topic, ENTRY_ENV: self.name, FIRING_ENV: firing_id}
        )
        request["env"] = env
        return request


@dataclass(frozen=True)
class _Values:
    payload: str
    topic: str
    entry: str
    firing: str

    def look_up(self, name: str) -> Any:
        head, _, path = name.partition(".")
        if head == "payload" and path:
            try:
                return walk(_json_payload(self.payload, name), path, "payload", name)
            except LookupError as exc:
                raise TemplateError(str(exc)) from None
        if head in ("payload", "topic", "entry", "firing") and not path:
            return getattr(self, head)
        raise TemplateError(f"unknown placeholder {{{{ {name} }}}}")


def _json_payload(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"{{{{ {name} }}}} needs a JSON payload; this one is not JSON") from exc


def walk(value: Any, path: str, what: str, name: str) -> Any:
    """`value`'s part at the dotted `path` (keys, or list indexes), for `{{ name }}`.

    LookupError names the missing step and `what` was walked (the payload, the item).
    """
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise LookupError(f"the {what} has no {step!r} for {{{{ {name} }}}}")
    return value


def _fill(value: Any, values: _Values) -> Any:
    if isinstance(value, str):
        return _fill_text(value, values)
    if isinstance(value, Mapping):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(item, values) for item in value]
    return value


def _fill_text(text: str, values: _Values) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole:
        return values.look_up(whole.group(1))

    def one(match: re.Match[str]) -> str:
        found = values.look_up(match.group(1))
        return found if isinstance(found, str) else json.dumps(found)

    return PLACEHOLDER.sub(one, text)


@dataclass(frozen=True)
class Catalog:
    """Entries as loaded from one source; `digest` tells one version of the text from another."""

    entries: tuple[Entry, ...]
    source: str
    digest: str

    def matching(self, routing_key: str) -> list[Entry]:
        """Every entry whose trigger matches (all fire, in catalog order)."""
        return [e for e in self.entries if e.trigger is not None and e.trigger.matches(routing_key)]

    def entry(self, name: str) -> Entry:
        for candidate in self.entries:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    @property
    def binding_keys(self) -> frozenset[str]:
        return frozenset(e.trigger.binding_key for e in self.entries if e.trigger is not None)
