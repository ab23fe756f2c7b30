"""The MQTT job listener's `jobs.csv`, read exactly as its users write it.

The header names the columns, so their order is free and any may be left out except
`job_name` and `image` (the listener's own example has no `disk_mount`). Known columns:
job_name, image, mqtt_topic, cpu_request, cpu_limit, memory_request, memory_limit, gpu,
disk_request, disk_limit, disk_mount, parallelism. An unknown column is refused (a typo
would otherwise drop a limit silently). An empty cell means "not set". Rows with a cell
count other than the header's are refused: a shifted row would read a memory as a cpu.

How a row becomes a worker request:

* `job_name` is the entry's name and the request's `jobName`; `image` its `image`;
  `mqtt_topic` its trigger (none: fired only by hand).
* cpu/memory requests and limits go to `resources` as `cpu` and `memory`; `gpu` N > 0
  becomes `nvidia.com/gpu: N` in both requests and limits (extended resources must match);
  `disk_request`/`disk_limit` become `ephemeral-storage`.
* `disk_mount` asks for a scratch directory: the request's `scratch` field
  (`{"mountPath": ..., "sizeLimit": disk_limit}`), an emptyDir the worker mounts there.
* `parallelism` N > 1 becomes `completions: N, parallelism: N`. The listener's work-queue
  Jobs start N pods that each drain a shared queue and exit 0 when it is empty; asking for
  N completions keeps that (every pod runs, and a pod that fails is replaced until N have
  succeeded) where Kubernetes' own work-queue mode (completions unset) would end the Job as
  soon as one pod succeeded and the rest stopped. 1 or empty: the usual one-pod Job.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from mstc_client.catalog import Entry, Trigger
from mstc_client.catalog_rules import (
    Place,
    check_mount_path,
    check_name,
    check_quantity,
    check_topic,
)
from mstc_client.errors import CatalogInvalid

__all__ = ["COLUMNS", "parse_csv"]

COLUMNS = (
    "job_name",
    "image",
    "mqtt_topic",
    "cpu_request",
    "cpu_limit",
    "memory_request",
    "memory_limit",
    "gpu",
    "disk_request",
    "disk_limit",
    "disk_mount",
    "parallelism",
)
_REQUIRED = ("job_name", "image")
# column -> (section, resource name) in the request's `resources`
_RESOURCE_COLUMNS = {
    "cpu_request": ("requests", "cpu"),
    "cpu_limit": ("limits", "cpu"),
    "memory_request": ("requests", "memory"),
    "memory_limit": ("limits", "memory"),
    "disk_request": ("requests", "ephemeral-storage"),
    "disk_limit": ("limits", "ephemeral-storage"),
}
_MAX_PARALLELISM = 10_000


def parse_csv(text: str, source: str) -> list[Entry]:
    """The entries of a jobs.csv text, in row order; CatalogInvalid at the first problem."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue  # blank lines between rows are harmless
            if header is None:
                header = _header(cells, source, line)
                continue
            entry = _entry(dict(zip(header, _cells(cells, header, source, line), strict=True)),
                           source, line)  # fmt: skip
            if entry.name in seen:
                raise CatalogInvalid(
                    source, line, f"job_name: {entry.name!r} is already on line {seen[entry.name]}"
                )
            seen[entry.name] = line
            entries.append(entry)
    except csv.Error as exc:
        raise CatalogInvalid(source, reader.line_num or next_line, f"not valid CSV: {exc}") from exc
    if header is None:
        raise CatalogInvalid(source, 0, "the CSV is empty: it needs a header line and rows")
    return entries


def _header(cells: list[str], source: str, line: int) -> list[str]:
    names = [cell.strip() for cell in cells]
    for name in names:
        if name not in COLUMNS:
            raise CatalogInvalid(
                source, line, f"unknown column {name!r}; known: {', '.join(COLUMNS)}"
            )
        if names.count(name) > 1:
            raise CatalogInvalid(source, line, f"column {name!r} appears twice")
    for name in _REQUIRED:
        if name not in names:
            raise CatalogInvalid(source, line, f"the header lacks the {name!r} column")
    return names


def _cells(cells: list[str], header: list[str], source: str, line: int) -> list[str]:
    if len(cells) != len(header):
        raise CatalogInvalid(
            source, line, f"the row has {len(cells)} cells, the header {len(header)}"
        )
    return [cell.strip() for cell in cells]


def _entry(row: dict[str, str], source: str, line: int) -> Entry:
    def place(column: str) -> Place:
        return Place(source, line, column)

    name = check_name(row["job_name"], place("job_name"))
    if not row["image"]:
        raise place("image").refuse("an image is required")
    topic = row.get("mqtt_topic", "")
    request: dict[str, Any] = {"image": row["image"], "jobName": name}
    resources = _resources(row, place)
    if resources:
        request["resources"] = resources
    if row.get("disk_mount"):
        scratch = {"mountPath": check_mount_path(row["disk_mount"], place("disk_mount"))}
        if row.get("disk_limit"):
            scratch["sizeLimit"] = row["disk_limit"]
        request["scratch"] = scratch
    pods = _whole(row.get("parallelism", ""), place("parallelism"), low=1, high=_MAX_PARALLELISM)
    if pods is not None and pods > 1:
        request["completions"] = pods
        request["parallelism"] = pods
    trigger = Trigger.of(check_topic(topic, place("mqtt_topic"))) if topic else None
    return Entry(name=name, trigger=trigger, request=request, line=line)


def _resources(row: dict[str, str], place: Callable[[str], Place]) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    for column, (section, resource) in _RESOURCE_COLUMNS.items():
        value = row.get(column, "")
        if value:
            sections.setdefault(section, {})[resource] = check_quantity(value, place(column))
    gpus = _whole(row.get("gpu", ""), place("gpu"), low=0, high=1024)
    if gpus:
        for section in ("requests", "limits"):
            sections.setdefault(section, {})["nvidia.com/gpu"] = str(gpus)
    return sections


def _whole(value: str, place: Place, *, low: int, high: int) -> int | None:
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise place.refuse(f"{value!r} is not a whole number ({low} to {high})")
    number = int(value)
    if not low <= number <= high:
        raise place.refuse(f"{number} is out of range ({low} to {high})")
    return number
