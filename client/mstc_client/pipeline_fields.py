"""What a pipeline task's values may be: request fields (by shape), roles, object names, foreach.

The worker validates a request in full when it arrives; a pipeline is refused before anything
runs, so the mistakes that would only show at stage three are caught here by shape: a text
where a list belongs, a misspelt key, an env name the worker reserves. Names, quantities, mount
paths and JSON-ness are checked by the catalog's rules (`catalog_rules`), so both file kinds
refuse the same things in the same words; their `CatalogInvalid` is turned into
`PipelineInvalid` naming the task and field (`Where.rule`).

foreach: a non-empty list of JSON values, or a range `{start, end, count, scale}`: `count`
values from `start` to `end` inclusive, evenly spaced (`linear`, the default) or evenly spaced
in logarithm (`log`, both ends > 0). A linear range of whole numbers whose step is whole gives
whole numbers; other values are rounded to 12 significant digits, so 10 ** 2 is 100.0, not
100.00000000000001.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mstc_client.catalog_rules import Place, check_mount_path, check_name, check_quantity
from mstc_client.errors import CatalogInvalid, PipelineInvalid

__all__ = [
    "FAMILY_KEYS",
    "MAX_TASKS",
    "PIPELINE_SET_FIELDS",
    "RANGE_KEYS",
    "REQUEST_FIELDS",
    "Where",
    "check_label",
    "check_object_name",
    "check_request",
    "check_role",
    "foreach_values",
]

MAX_TASKS = 1000  # per pipeline, after expansion: the runner's bench size; more is a mistake
RANGE_KEYS = frozenset({"start", "end", "count", "scale"})
FAMILY_KEYS = frozenset({"task", "output"})
# Where a task's objects live is the pipeline's to say, for every task alike.
PIPELINE_SET_FIELDS = frozenset(
    {"inputBucket", "inputBucketUrl", "outputBucket", "outputBucketUrl", "prefix"}
)
_ROLE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIPELINE_ENV = ("MSTC_FLOW_INPUT_", "MSTC_FLOW_OUTPUT_", "MSTC_FLOW_PIPELINE", "MSTC_FLOW_TASK",
                 "MSTC_FLOW_INDEX", "MSTC_FLOW_ITEM")  # fmt: skip
_OBJECT_MAX = 400  # with a prefix of at most 512, well inside S3's 1024-byte key


@dataclass(frozen=True)
class Where:
    """The task a value belongs to (None: the pipeline), for refusals that name it."""

    source: str
    task: str | None
    line: int = 0

    def refuse(self, field: str | None, reason: str) -> PipelineInvalid:
        return PipelineInvalid(self.source, self.task, field, reason, self.line)

    @contextmanager
    def rule(self, field: str) -> Iterator[Place]:
        """A `Place` for a catalog rule; its refusal re-raised as this task's."""
        try:
            yield Place(self.source, self.line, field)
        except CatalogInvalid as exc:
            raise self.refuse(field, exc.reason.removeprefix(f"{field}: ")) from None


def _text(value: Any, where: Where, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise where.refuse(field, f"must be a non-empty text; got {value!r}")


def _whole(low: int) -> Callable[[Any, Where, str], None]:
    def check(value: Any, where: Where, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise where.refuse(field, f"must be a whole number of at least {low}; got {value!r}")

    return check


def _texts(value: Any, where: Where, field: str) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise where.refuse(
            field, f'must be a list of texts, e.g. ["python", "run.py"]; got {value!r}'
        )


def _text_map(value: Any, where: Where, field: str) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise where.refuse(field, f"must be a mapping of texts; got {value!r}")


def _env(value: Any, where: Where, field: str) -> None:
    _text_map(value, where, field)
    for name in value:
        if not _ENV_NAME.fullmatch(name):
            raise where.refuse(f"{field}.{name}", "must be letters, digits and '_'")
        if name.startswith(_PIPELINE_ENV):
            raise where.refuse(f"{field}.{name}", "is set by the pipeline for every task")


def _quantity(value: Any, where: Where, field: str) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return
    with where.rule(field) as place:
        check_quantity(value if isinstance(value, str) else repr(value), place)


def _resources(value: Any, where: Where, field: str) -> None:
    if not isinstance(value, Mapping) or set(value) - {"requests", "limits"}:
        raise where.refuse(field, 'must be a mapping of "requests" and "limits"')
    for section, quantities in value.items():
        if not isinstance(quantities, Mapping):
            raise where.refuse(f"{field}.{section}", 'must be a mapping such as {"cpu": "1"}')
        for name, quantity in quantities.items():
            _quantity(quantity, where, f"{field}.{section}.{name}")


def _completion_mode(value: Any, where: Where, field: str) -> None:
    if value not in ("NonIndexed", "Indexed"):
        raise where.refuse(field, f'must be "NonIndexed" or "Indexed"; got {value!r}')


def _scratch(value: Any, where: Where, field: str) -> None:
    if not isinstance(value, Mapping) or set(value) - {"mountPath", "sizeLimit"}:
        raise where.refuse(field, 'must be a mapping such as {"mountPath": "/scratch"}')
    path = value.get("mountPath")
    if not isinstance(path, str):
        raise where.refuse(f"{field}.mountPath", "an absolute path is required")
    with where.rule(f"{field}.mountPath") as place:
        check_mount_path(path, place)
    if "sizeLimit" in value:
        _quantity(value["sizeLimit"], where, f"{field}.sizeLimit")


# The worker request fields a task (or `defaults`) may hold, each with its shape.
REQUEST_FIELDS: dict[str, Callable[[Any, Where, str], None]] = {
    "image": _text,
    "jobName": _text,
    "timeOut": _whole(0),
    "backoffLimit": _whole(0),
    "env": _env,
    "resources": _resources,
    "command": _texts,
    "args": _texts,
    "labels": _text_map,
    "annotations": _text_map,
    "completions": _whole(1),
    "parallelism": _whole(1),
    "completionMode": _completion_mode,
    "taskQueue": _text,
    "scratch": _scratch,
}


def check_request(request: Mapping[str, Any], where: Where) -> None:
    """Each field's shape; an image is required (from the task or `defaults`)."""
    for key, value in request.items():
        REQUEST_FIELDS[key](value, where, key)
    if "image" not in request:
        raise where.refuse("image", "an image is required (in the task or in defaults)")


def check_role(role: Any, where: Where, field: str) -> str:
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise where.refuse(
            f"{field}.{role}", "a role is lower-case letters, digits and '_' (it names an env)"
        )
    return role


def check_object_name(name: Any, where: Where, field: str) -> str:
    """An object name relative to the pipeline's prefix: 'a/b.txt', no '..', no empty level."""
    if not isinstance(name, str) or not name:
        raise where.refuse(field, f"must be an object name such as 'shards/0.csv'; got {name!r}")
    if len(name) > _OBJECT_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise where.refuse(field, f"{name!r}: at most {_OBJECT_MAX} printable characters")
    if name.startswith("/") or any(level in ("", ".", "..") for level in name.split("/")):
        raise where.refuse(field, f"{name!r}: a relative name without '.', '..' or '//'")
    return name


def foreach_values(spec: Any, where: Where) -> list[Any]:
    """The values a task is expanded over (see the module docstring)."""
    if isinstance(spec, list):
        if not spec:
            raise where.refuse("foreach", "an empty list expands to no task")
        if len(spec) > MAX_TASKS:
            raise where.refuse("foreach", f"{len(spec)} values, over {MAX_TASKS} tasks")
        return spec
    if not isinstance(spec, Mapping):
        raise where.refuse("foreach", "must be a list of values or a range {start, end, count}")
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown:
        raise where.refuse(f"foreach.{unknown[0]}", "unknown; known: start, end, count, scale")
    return _range(spec, where)


def _range(spec: Mapping[str, Any], where: Where) -> list[Any]:
    start: Any = spec.get("start", 0)
    end: Any = spec.get("end")
    count: Any = spec.get("count")
    for key, value in (("start", start), ("end", end)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise where.refuse(f"foreach.{key}", f"must be a number; got {value!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise where.refuse("foreach.count", f"must be a whole number of at least 1; got {count!r}")
    if count > MAX_TASKS:
        raise where.refuse("foreach.count", f"{count} values, over {MAX_TASKS} tasks")
    scale = spec.get("scale", "linear")
    if scale == "log":
        if start <= 0 or end <= 0:
            raise where.refuse("foreach.start", "a log range needs start and end above 0")
        low, high = math.log10(start), math.log10(end)
        return [_tidy(10 ** _between(low, high, i, count)) for i in range(count)]
    if scale != "linear":
        raise where.refuse("foreach.scale", f'must be "linear" or "log"; got {scale!r}')
    if (
        isinstance(start, int)
        and isinstance(end, int)
        and (count == 1 or (end - start) % (count - 1) == 0)
    ):
        step = 0 if count == 1 else (end - start) // (count - 1)
        return [start + i * step for i in range(count)]
    return [_tidy(_between(start, end, i, count)) for i in range(count)]


def _between(low: float, high: float, index: int, count: int) -> float:
    return low if count == 1 else low + (high - low) * index / (count - 1)


def _tidy(value: float) -> float:
    return float(f"{value:.12g}")


def check_label(name: Any, where: Where, field: str = "name") -> str:
    """A pipeline's or task's name: a DNS-1123 label of at most 63 (it names Jobs)."""
    with where.rule(field) as place:
        return check_name(name, place)
