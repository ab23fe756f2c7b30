"""The checks both catalog formats share: names, topics, quantities, paths and templates.

The YAML and CSV readers (`catalog_yaml`, `catalog_csv`) differ in how they find a value
and its line; what a value may be is decided once, here, so `mstc catalog validate` and the
flow service refuse the same things with the same words. Every check raises
`CatalogInvalid(source, line, reason)` naming the field, because a catalog is refused whole
at its first problem and the person fixing it needs the place.

Quantities are checked with the same syntax the worker applies to `resources` (a
non-negative decimal with an optional SI, binary-SI or exponent suffix). The client may not
import the worker, so the rule is restated rather than shared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mstc_client.catalog import PLACEHOLDER
from mstc_client.errors import CatalogInvalid

__all__ = [
    "MAX_CATALOG_BYTES",
    "Place",
    "check_json",
    "check_mount_path",
    "check_name",
    "check_quantity",
    "check_templates",
    "check_topic",
]

MAX_CATALOG_BYTES = 1024 * 1024  # a catalog is a few hundred lines; anything far past is hostile
NAME_MAX = 63  # an entry's name becomes a Job name (a DNS-1123 label)

_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(
    r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?"
)
# What catalog.Entry.render understands; anything else between braces is refused up front.
_PLAIN_NAMES = frozenset({"payload", "topic", "entry", "firing"})


@dataclass(frozen=True)
class Place:
    """Where a value was written: the source, its 1-based line, and the field's name."""

    source: str
    line: int
    field: str

    def refuse(self, problem: str) -> CatalogInvalid:
        return CatalogInvalid(self.source, self.line, f"{self.field}: {problem}")

    def inner(self, field: str) -> Place:
        return Place(self.source, self.line, f"{self.field}.{field}")


def check_name(name: object, place: Place) -> str:
    if not isinstance(name, str) or not name:
        raise place.refuse("a name is required (a text such as init-job)")
    if len(name) > NAME_MAX:
        raise place.refuse(f"{name!r} is {len(name)} characters long, over {NAME_MAX}")
    if not _NAME.fullmatch(name):
        raise place.refuse(
            f"{name!r} must be lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_topic(topic: object, place: Place) -> str:
    """An MQTT filter (`a/+/c`, `a/#`) or an AMQP binding key (`a.*.c`, `a.#`)."""
    if not isinstance(topic, str) or not topic:
        raise place.refuse("a topic must be a non-empty text")
    if any(ch.isspace() for ch in topic):
        raise place.refuse(f"{topic!r} holds white space")
    levels = topic.split("/") if "/" in topic or "+" in topic else topic.split(".")
    for index, level in enumerate(levels):
        wild = {"+", "#", "*"} & set(level)
        if wild and len(level) > 1:
            raise place.refuse(f"{topic!r}: a wildcard must be a whole level, not {level!r}")
        if level == "#" and index != len(levels) - 1:
            raise place.refuse(f"{topic!r}: '#' may only be the last level")
    return topic


def check_quantity(value: str, place: Place) -> str:
    if not _QUANTITY.fullmatch(value):
        raise place.refuse(f'{value!r} is not a Kubernetes quantity such as "500m", "2" or "4Gi"')
    return value


def check_mount_path(path: str, place: Place) -> str:
    """An absolute path without '..' (the worker checks the same, and refuses its own mounts)."""
    if not path.startswith("/"):
        raise place.refuse(f"{path!r} must be an absolute path (starting with '/')")
    if ".." in path.split("/"):
        raise place.refuse(f"{path!r} must not contain '..'")
    if path.rstrip("/") == "":
        raise place.refuse("the mount path must not be '/'")
    return path


def check_templates(value: Any, place: Place) -> None:
    """Every `{{ ... }}` in the strings of `value` must name a value a firing provides."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            name = match.group(1)
            head, _, path = name.partition(".")
            if name not in _PLAIN_NAMES and not (head == "payload" and path):
                raise place.refuse(
                    f"unknown placeholder {{{{ {name} }}}}; known: payload, payload.<path>, "
                    "topic, entry, firing"
                )
            if path and any(step == "" for step in path.split(".")):
                raise place.refuse(f"placeholder {{{{ {name} }}}} has an empty path step")
        if "{{" in PLACEHOLDER.sub("", value):
            raise place.refuse(f"{value!r} holds '{{{{' that is not a placeholder {{{{ name }}}}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_templates(item, place.inner(str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_templates(item, place.inner(str(index)))


def check_json(value: Any, place: Place) -> None:
    """The request must be what JSON carries: text keys, no dates, no NaN."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise place.refuse(f"must hold only JSON values (text keys, no dates): {exc}") from exc
