"""The YAML catalog: a mapping with `entries:`, each entry a name, a trigger and a request.

```yaml
entries:
  - name: init-job                 # required, a DNS-1123 label (it names the Job)
    trigger: experiments/init-job  # optional: MQTT filter or AMQP key; none = fired by hand
    request:                       # required: the worker request (camelCase), templated
      image: braingeneers/job-init:latest
      env: {DATASET: "{{ payload.dataset }}"}
    concurrency: skip              # optional: allow (default) | skip | replace
    maxInFlight: 1                 # optional: 0 (default) = no bound
    expectedSeconds: 600           # optional: a Job running longer is flagged overdue
```

`request.jobName` defaults to the entry's name. Unknown keys are refused (a misspelt
`concurency` would otherwise be silently ignored).

The text is read with PyYAML's safe loader only, as a node tree first, so each entry and
field is refused with the line it is on. Aliases (`*name`) are refused outright: they are
what "billion laughs" documents are made of, and a catalog has no need for them.
"""

from __future__ import annotations

from typing import Any

import yaml

from mstc_client.catalog import Concurrency, Entry, Trigger
from mstc_client.catalog_rules import Place, check_json, check_name, check_templates, check_topic
from mstc_client.errors import CatalogInvalid

__all__ = ["parse_yaml", "screen_yaml"]

_TOP_KEYS = frozenset({"entries"})
_ENTRY_KEYS = ("name", "trigger", "request", "concurrency", "maxInFlight", "expectedSeconds")
_MAX_EXPECTED_SECONDS = 366 * 86400
_MAX_IN_FLIGHT = 10_000
_MAX_DEPTH = 32  # a request is a few levels deep; more is a hostile text


def parse_yaml(text: str, source: str) -> list[Entry]:
    """The entries of a YAML catalog, in order; CatalogInvalid at the first problem."""
    loader = yaml.SafeLoader(text)
    try:
        screen_yaml(text, source)
        root = loader.get_single_node()
        if root is None:
            raise CatalogInvalid(source, 0, "the catalog is empty: it needs 'entries:'")
        return _entries(root, loader, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise CatalogInvalid(source, line, f"not valid YAML: {_first_line(exc)}") from exc
    finally:
        loader.dispose()


def _first_line(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem or exc).splitlines()[0]


def screen_yaml(text: str, source: str, what: str = "a catalog") -> None:
    """Refuse aliases and deep nesting from the event stream, before a tree is built.

    Pipeline files read as YAML are screened here too (`what` names the kind of file).

    Streaming stops at the first offence, so a hostile text costs little: PyYAML's scanner
    slows down with every open bracket, and its composer recurses once per level.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise CatalogInvalid(
                source, _mark_line(event), f"YAML aliases (*name) are not allowed in {what}"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                raise CatalogInvalid(
                    source, _mark_line(event), f"the YAML is nested over {_MAX_DEPTH} levels deep"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _mark_line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark else 0


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _mapping(node: yaml.Node, place: Place) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node's keys (texts) -> (key node, value node); duplicate keys refused."""
    if not isinstance(node, yaml.MappingNode):
        raise place.refuse("must be a mapping (key: value lines)")
    items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            raise CatalogInvalid(place.source, _line(key_node), f"{place.field}: keys are texts")
        if key in items:
            raise CatalogInvalid(place.source, _line(key_node), f"{place.field}: {key!r} twice")
        items[key] = (key_node, value_node)
    return items


def _entries(root: yaml.Node, loader: yaml.SafeLoader, source: str) -> list[Entry]:
    top = _mapping(root, Place(source, _line(root), "the catalog"))
    for key, (key_node, _) in top.items():
        if key not in _TOP_KEYS:
            raise CatalogInvalid(source, _line(key_node), f"unknown key {key!r}; known: entries")
    if "entries" not in top:
        raise CatalogInvalid(source, _line(root), "the catalog lacks 'entries:'")
    listed = top["entries"][1]
    if not isinstance(listed, yaml.SequenceNode):
        raise CatalogInvalid(source, _line(listed), "entries: must be a list ('- name: ...')")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for node in listed.value:
        entry = _entry(node, loader, source)
        if entry.name in seen:
            raise CatalogInvalid(
                source, entry.line, f"name: {entry.name!r} is already on line {seen[entry.name]}"
            )
        seen[entry.name] = entry.line
        entries.append(entry)
    return entries


def _entry(node: yaml.Node, loader: yaml.SafeLoader, source: str) -> Entry:
    line = _line(node)
    fields = _mapping(node, Place(source, line, "entry"))
    for key, (key_node, _) in fields.items():
        if key not in _ENTRY_KEYS:
            raise CatalogInvalid(
                source, _line(key_node), f"unknown key {key!r}; known: {', '.join(_ENTRY_KEYS)}"
            )

    def value(key: str) -> tuple[Any, Place]:
        if key not in fields:
            return None, Place(source, line, key)
        value_node = fields[key][1]
        return loader.construct_object(value_node, deep=True), Place(source, _line(value_node), key)

    name = check_name(*value("name"))
    topic, topic_place = value("trigger")
    trigger = None if topic is None else Trigger.of(check_topic(topic, topic_place))
    request = _request(*value("request"), name=name)
    return Entry(
        name=name,
        trigger=trigger,
        request=request,
        concurrency=_concurrency(*value("concurrency")),
        max_in_flight=_max_in_flight(*value("maxInFlight")),
        line=line,
        expected_seconds=_expected_seconds(*value("expectedSeconds")),
    )


def _request(request: Any, place: Place, *, name: str) -> dict[str, Any]:
    if request is None:
        raise place.refuse("a request is required (a mapping with at least 'image')")
    if not isinstance(request, dict):
        raise place.refuse("must be a mapping of worker request fields (image, env, ...)")
    check_json(request, place)
    image = request.get("image")
    if not isinstance(image, str) or not image.strip():
        raise place.inner("image").refuse("an image is required (a text)")
    check_templates(request, place)
    return {"jobName": name, **request}


def _concurrency(value: Any, place: Place) -> Concurrency:
    if value is None:
        return Concurrency.ALLOW
    try:
        return Concurrency(value)
    except ValueError:
        known = ", ".join(c.value for c in Concurrency)
        raise place.refuse(f"{value!r} is not one of {known}") from None


def _max_in_flight(value: Any, place: Place) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise place.refuse(f"{value!r} is not a whole number (0 = no bound)")
    if not 0 <= value <= _MAX_IN_FLIGHT:
        raise place.refuse(f"{value} is out of range (0 to {_MAX_IN_FLIGHT})")
    return value


def _expected_seconds(value: Any, place: Place) -> float:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise place.refuse(f"{value!r} is not a number of seconds")
    if not 0 < value <= _MAX_EXPECTED_SECONDS:
        raise place.refuse(f"{value} is out of range (more than 0, at most a year)")
    return float(value)
