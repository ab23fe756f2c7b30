"""Turning a pipeline file's text into a `Pipeline`, refusing it whole at its first problem.

The file (JSON; YAML too, by a ".yaml"/".yml" name or `fmt`), as `schemas/pipeline.schema.json`
describes it:

```json
{
  "name": "shards",
  "defaults": {"image": "python:3.12-slim", "timeOut": 10},
  "parallelism": 4,
  "bucket": "data",
  "prefix": "runs/shards",
  "tasks": [
    {"name": "make", "foreach": {"start": 0, "end": 7, "count": 8},
     "command": ["python", "make.py"], "outputs": {"shard": "shard-{{ index }}.json"}},
    {"name": "merge", "command": ["python", "merge.py"],
     "inputs": {"shards": {"task": "make", "output": "shard"}}, "outputs": {"all": "all.json"}}
  ]
}
```

`name` is required (a DNS-1123 label); `defaults` holds request fields every task starts from;
`parallelism` bounds the tasks running at once (1 to 1000, default 10); `bucket` (default: the
caller's) and `prefix` (default: the name) say where the objects live.

See `pipeline_tasks` for tasks, foreach and templates, `pipeline` for the graph and requests,
and examples/pipelines/shards.json for a whole one. Unknown keys are refused, as the
catalog's are: a misspelt `after` would otherwise silently drop a dependency.

Hostile input is refused before it costs much, as the catalog does: the size is capped
(`MAX_PIPELINE_BYTES`), bytes must be UTF-8, nesting is bounded, JSON may not repeat a key or
hold NaN, YAML goes through the catalog's screening (no aliases, bounded depth) and PyYAML's
safe loader only. Problems are `PipelineInvalid` with the line of the task where it is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from mstc_client.catalog import digest_of
from mstc_client.catalog_rules import check_json
from mstc_client.catalog_yaml import screen_yaml
from mstc_client.errors import CatalogInvalid, PipelineInvalid
from mstc_client.pipeline import Pipeline, check_graph
from mstc_client.pipeline_fields import PIPELINE_SET_FIELDS, REQUEST_FIELDS, Where, check_label
from mstc_client.pipeline_tasks import expand_tasks

__all__ = [
    "DEFAULT_PARALLELISM",
    "FORMATS",
    "MAX_PIPELINE_BYTES",
    "TOP_KEYS",
    "decode_pipeline",
    "parse_pipeline",
    "schema",
]

MAX_PIPELINE_BYTES = 1024 * 1024
FORMATS = ("json", "yaml")
TOP_KEYS = frozenset(
    {"name", "description", "defaults", "parallelism", "bucket", "prefix", "tasks"}
)
DEFAULT_PARALLELISM = 10
_MAX_PARALLELISM = 1000
_MAX_DEPTH = 32
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule, as the worker reads it
_PREFIX_MAX = 200  # the worker allows 512, and the log's name and object names follow it


def schema() -> dict[str, Any]:
    """The file's JSON Schema, as shipped in the package."""
    text = resources.files("mstc_client").joinpath("schemas/pipeline.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def decode_pipeline(data: bytes, *, source: str) -> str:
    """The text of a pipeline file read as bytes: size capped, UTF-8 required."""
    if len(data) > MAX_PIPELINE_BYTES:
        raise _whole(source, f"the file is over the limit of {MAX_PIPELINE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineInvalid(
            source, None, None, f"not UTF-8 text (byte {exc.start})", line
        ) from exc


def parse_pipeline(text: str, *, source: str, fmt: str | None = None) -> Pipeline:
    """The pipeline `text` holds, expanded and checked (all but the bucket: `check_inputs`)."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_PIPELINE_BYTES:
        raise _whole(source, f"the file is over the limit of {MAX_PIPELINE_BYTES} bytes")
    if fmt is not None and fmt not in FORMATS:
        raise _whole(source, f"unknown format {fmt!r}; known: json, yaml")
    chosen = fmt or ("yaml" if source.lower().endswith((".yaml", ".yml")) else "json")
    body = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write
    data, lines = _load_yaml(body, source) if chosen == "yaml" else _load_json(body, source)
    _check_shape(data, source, 0)
    with Where(source, None).rule("the file") as place:
        check_json(data, place)
    return _build(data, lines, source, digest_of(text))


def _whole(source: str, reason: str) -> PipelineInvalid:
    return PipelineInvalid(source, None, None, reason)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(f"the key {key!r} is written twice in one object")
        found[key] = value
    return found


def _refuse_constant(name: str) -> Any:
    raise _DuplicateKey(f"{name} is not a JSON value")


def _load_json(text: str, source: str) -> tuple[Any, list[int]]:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise PipelineInvalid(
            source, None, None, f"not valid JSON: {exc.msg}", exc.lineno
        ) from None
    except _DuplicateKey as exc:
        raise _whole(source, str(exc)) from None
    except RecursionError:
        raise _whole(source, f"the JSON is nested over {_MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # an integer of over 4300 digits
        raise _whole(source, f"not readable JSON: {exc}") from None
    return data, _json_task_lines(text)


def _json_task_lines(text: str) -> list[int]:
    """The line each task starts on, by decoding the (already valid) text value by value."""
    try:
        return _task_lines_of(text, json.JSONDecoder())
    except (ValueError, IndexError):  # lines are a help: without them, refusals name no line
        return []


def _task_lines_of(text: str, decoder: json.JSONDecoder) -> list[int]:
    lines: list[int] = []

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n,:":
            at += 1
        return at

    index = skip(text.index("{") + 1) if text.lstrip().startswith("{") else len(text)
    while index < len(text) and text[index] == '"':
        key, index = decoder.raw_decode(text, index)
        index = skip(index)
        if key == "tasks" and text[index] == "[":
            index = skip(index + 1)
            line, counted = 1, 0  # counted up to here, so a long file is scanned once
            while text[index] != "]":
                line, counted = line + text.count("\n", counted, index), index
                lines.append(line)
                index = skip(decoder.raw_decode(text, index)[1])
            return lines
        index = skip(decoder.raw_decode(text, index)[1])
    return lines


def _load_yaml(text: str, source: str) -> tuple[Any, list[int]]:
    loader = yaml.SafeLoader(text)
    try:
        screen_yaml(text, source, what="a pipeline")
        root = loader.get_single_node()
        if root is None:
            raise _whole(source, "the file is empty")
        _yaml_unique_keys(root, source)
        tasks = next((v for k, v in _pairs(root) if k.value == "tasks"), None)
        lines = [n.start_mark.line + 1 for n in tasks.value] if tasks is not None else []
        return loader.construct_object(root, deep=True), lines
    except CatalogInvalid as exc:
        raise PipelineInvalid(source, None, None, exc.reason, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else 0
        raise PipelineInvalid(source, None, None, f"not valid YAML: {problem}", line) from None
    finally:
        loader.dispose()


def _pairs(node: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
    return list(node.value) if isinstance(node, yaml.MappingNode) else []


def _yaml_unique_keys(node: yaml.Node, source: str) -> None:
    seen: set[Any] = set()
    for key, value in _pairs(node):
        if isinstance(key, yaml.ScalarNode) and key.value in seen:
            raise PipelineInvalid(source, None, None, f"the key {key.value!r} is written twice",
                                  key.start_mark.line + 1)  # fmt: skip
        seen.add(key.value if isinstance(key, yaml.ScalarNode) else id(key))
        _yaml_unique_keys(value, source)
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _yaml_unique_keys(item, source)


def _check_shape(value: Any, source: str, depth: int) -> None:
    """Bounded nesting, and text keys only (YAML allows `1: x`, which JSON would rename)."""
    if depth > _MAX_DEPTH:
        raise _whole(source, f"the file is nested over {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        strange = next((key for key in value if not isinstance(key, str)), None)
        if strange is not None:
            raise _whole(source, f"keys must be texts; {strange!r} is not")
    children = (
        value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    )
    for child in children:
        _check_shape(child, source, depth + 1)


def _build(data: Any, lines: list[int], source: str, digest: str) -> Pipeline:
    where = Where(source, None)
    if not isinstance(data, Mapping):
        raise _whole(source, "a pipeline is an object with 'name' and 'tasks'")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise where.refuse(unknown[0], "unknown key; known: " + ", ".join(sorted(TOP_KEYS)))
    name = check_label(data.get("name"), where)
    defaults = _defaults(data.get("defaults", {}), where)
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise where.refuse("tasks", "a non-empty list of tasks is required")
    pipeline = Pipeline(
        name=name,
        tasks=expand_tasks(tasks, defaults, lines, source=source, pipeline=name),
        parallelism=_parallelism(data.get("parallelism", DEFAULT_PARALLELISM), where),
        bucket=_bucket(data.get("bucket"), where),
        prefix=_prefix(data.get("prefix", name), where),
        digest=digest,
        source=source,
    )
    check_graph(pipeline)
    return pipeline


def _defaults(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.refuse("defaults", "must be a mapping of worker request fields")
    for key in value:
        if key in PIPELINE_SET_FIELDS:
            raise where.refuse(f"defaults.{key}", "set by the pipeline: use bucket and prefix")
        if key not in REQUEST_FIELDS:
            known = ", ".join(sorted(REQUEST_FIELDS))
            raise where.refuse(f"defaults.{key}", f"not a request field; known: {known}")
    return value


def _parallelism(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PARALLELISM:
        raise where.refuse("parallelism", f"must be a whole number from 1 to {_MAX_PARALLELISM}")
    return value


def _bucket(value: Any, where: Where) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _BUCKET.fullmatch(value):
        raise where.refuse("bucket", f"{value!r} is not a bucket name (3 to 63 of a-z 0-9 . -)")
    return value


def _prefix(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value.isprintable() or not 0 < len(value) <= _PREFIX_MAX:
        raise where.refuse("prefix", f"must be a text of 1 to {_PREFIX_MAX} characters")
    if value.startswith("/") or value.endswith("/") or ".." in value.split("/"):
        raise where.refuse("prefix", f"{value!r}: relative, no '..', no trailing '/'")
    return value
