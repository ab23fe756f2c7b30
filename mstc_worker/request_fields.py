"""Checks of the individual request fields, each failing with a precise `RequestRejected`.

Split from `protocol` so that module reads as the shape of the protocol while this
one holds the many small rules: bucket forms, numbers that JSON may spell as
5 or 5.0, and the extensions (env, resources, command/args, labels, annotations)
whose syntax Kubernetes would otherwise refuse only after the Job was submitted.
Every function takes the decoded JSON object and the field's JSON name, and
returns the field's value in the form the `Request` model stores.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from mstc_worker import task_queues
from mstc_worker.errors import InvalidRequest, RequestRejected
from mstc_worker.kube_syntax import (
    annotation_key_problem,
    is_env_name,
    is_quantity,
    label_key_problem,
    label_value_problem,
    qualified_name_problem,
)

__all__ = [
    "COMPLETION_MODES",
    "RESERVED_ENV_NAMES",
    "RESERVED_ENV_PREFIX",
    "Buckets",
    "FanOut",
    "KeyAllowList",
    "Resources",
    "Scratch",
    "buckets",
    "describe",
    "extra_env",
    "extra_labels",
    "fan_out",
    "java_int",
    "pod_annotations",
    "prefix",
    "resources",
    "scratch",
    "string_list",
    "task_queue",
    "whole_number",
]

# What the worker itself puts in a Job's environment: a request overriding them
# would point the Job at another bucket or at forged credentials.
RESERVED_ENV_NAMES = frozenset(
    {
        "MSTC_JOB",
        "INPUT_BUCKET_URL",
        "OUTPUT_BUCKET_URL",
        "INPUT_BUCKET",
        "OUTPUT_BUCKET",
        "FILE_PREFIX",
        "MINIO_SERVICE_HOST",
        "MINIO_SERVICE_PORT",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        # A Job's own storage credentials (job_access).
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }
)
RESERVED_ENV_PREFIX = "MSTC_"
# Names under the reserved prefix that a submitter sets and the worker never does: mstc-flow
# passes a trigger's payload and topic, and its entry and firing, to the Job under these.
CALLER_ENV_PREFIXES = ("MSTC_TRIGGER_", "MSTC_FLOW_")
# Key prefixes whose labels and annotations the worker or the Job controller set;
# a request writing them could hide its Job from the worker or hijack another's.
_RESERVED_KEY_DOMAINS = ("app.kubernetes.io", "mstc.io", "batch.kubernetes.io")
_RESERVED_PLAIN_KEYS = frozenset({"job-name", "controller-uid"})
_ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes' limit on all annotations together
_PREFIX_MAX_CHARS = 512  # leaves room in S3's 1024-byte key for "-<job name>.log"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Java's String.trim() drops every character up to U+0020, control characters included.
_JAVA_TRIMMED = "".join(map(chr, range(0x21)))
# Integer.parseInt: an optional sign, then decimal digits of any script (Character.digit).
_JAVA_DIGITS = re.compile(r"[+-]?\d+")


class Resources(BaseModel):
    """Container resource requests and limits, as Kubernetes quantity strings."""

    model_config = ConfigDict(frozen=True)

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


# Kubernetes' completion modes, spelled as the Job spec spells them.
COMPLETION_MODES = ("NonIndexed", "Indexed")


class FanOut(BaseModel):
    """How many pods one request runs: the Job's completions, parallelism and completion mode.

    The default (one completion, one pod at a time, NonIndexed) is the single-pod Job every
    request ran before fan-out, and its manifest is unchanged.
    """

    model_config = ConfigDict(frozen=True)

    completions: int = 1
    parallelism: int = 1
    indexed: bool = False

    @property
    def single(self) -> bool:
        """Whether this is the plain one-pod Job (no fan-out fields in its manifest)."""
        return self.completions == 1 and self.parallelism == 1 and not self.indexed


class Scratch(BaseModel):
    """A scratch directory for the Job's container: an emptyDir mounted at `mount_path`.

    Jobs that unpack data need disk beyond their image (the MQTT job listener's `disk_mount`),
    and with a read-only root filesystem (MSTC_JOB_READ_ONLY_ROOT) it is the writable place.
    The worker mounts nothing else into the container, so only the runtime's own paths clash.
    """

    model_config = ConfigDict(frozen=True)

    mount_path: str
    size_limit: str | None = None


class KeyAllowList(NamedTuple):
    """The key prefixes an operator lets requests use, and the setting that lists them.

    Labels and annotations steer much besides the Job (Services select pods by label;
    service meshes, cloud IAM, secret injectors and AppArmor read pod annotations), so
    no key passes unless its prefix is named; the worker's reserved keys never do.
    """

    prefixes: tuple[str, ...]
    setting: str


class Buckets(NamedTuple):
    """The request's buckets, resolved: names always, URLs when the URL form was used."""

    input_bucket: str
    output_bucket: str
    input_url: str | None
    output_url: str | None


def describe(value: object, *, bare: bool = False) -> str:
    """A short JSON-flavoured description of a value for messages, e.g. ``the string "x"``."""
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
        return text if bare else f"the string {text}"
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        kind = "boolean" if isinstance(value, bool) else "number"
        return f"the {kind} {json.dumps(value)}"
    return "an array" if isinstance(value, list) else "an object"


def _reject(field: str, requirement: str, value: object) -> RequestRejected:
    return RequestRejected(f"Field '{field}' {requirement}; got {describe(value)}.", field=field)


def _optional_text(data: dict[str, Any], field: str) -> str | None:
    """A string field that may be absent; null and "" both mean "not given"."""
    value = data.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _reject(field, "must be a string", value)
    return value


def whole_number(
    data: dict[str, Any], field: str, *, high: int, meaning: str, low: int = 0
) -> int | None:
    """A whole number from `low` (0 by default) to `high`, or None when absent.

    JSON has one number type, so 5.0 is accepted as 5; 5.5, booleans and strings are not.
    """
    value = data.get(field)
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or not low <= number <= high:
        raise _reject(field, f"must be {meaning}", value)
    return number


def java_int(data: dict[str, Any], field: str, *, high: int, meaning: str) -> int | None:
    """A field the Java worker declared as `int`, read as its JSON binding (Jackson) read it.

    Java-era clients sent such fields in every form Jackson accepts, so this one accepts the
    same: a fraction is cut toward zero (2.9 is 2), a string of decimal digits is that number
    (surrounding blanks ignored), and "", blanks or "null" mean absent (None). What Jackson
    refused (booleans, arrays, objects, "5.5", "1e3", hex) is refused here too. The range
    check comes after: a negative number of minutes has no meaning, whatever Java made of it.
    """
    value = data.get(field)
    number: int | None = None
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip(_JAVA_TRIMMED)
        if text in {"", "null"}:
            return None
        # The length bound keeps int() away from hostile digit strings; Java refuses
        # anything past int's range anyway.
        if len(text) <= 12 and _JAVA_DIGITS.fullmatch(text):
            number = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = math.trunc(value)
    if number is None or not 0 <= number <= high:
        raise _reject(field, f"must be {meaning}", value)
    return number


def _bucket_name_problem(name: str) -> str | None:
    if not _BUCKET.fullmatch(name) or ".." in name or ".-" in name or "-." in name:
        return (
            "it must have 3 to 63 characters, only lower-case letters, digits, '.' and '-', "
            "and start and end with a letter or digit"
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return "it must not look like an IP address"


def _invalid_bucket(field: str, bucket: str, problem: str) -> RequestRejected:
    return RequestRejected(
        f"Field '{field}' names the bucket {describe(bucket, bare=True)}, which is not a valid "
        f"bucket name: {problem}.",
        field=field,
    )


def _bucket_from_url(url: str, field: str) -> str:
    requirement = (
        "must be an http(s) URL whose path starts with the bucket, e.g. http://minio:9000/my-bucket"
    )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise _reject(field, requirement, url) from exc
    bucket = next((segment for segment in parts.path.split("/") if segment), "")
    if parts.scheme not in ("http", "https") or not host or not bucket:
        raise _reject(field, requirement, url)
    problem = _bucket_name_problem(bucket)
    if problem is not None:
        raise _invalid_bucket(field, bucket, problem)
    return bucket


def _bucket(name_field: str, url_field: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """One bucket given by name, URL or both; both must then name the same bucket."""
    name = _optional_text(data, name_field)
    url = _optional_text(data, url_field)
    if name is not None:
        problem = _bucket_name_problem(name)
        if problem is not None:
            raise _invalid_bucket(name_field, name, problem)
    if url is not None:
        from_url = _bucket_from_url(url, url_field)
        if name is not None and name != from_url:
            raise RequestRejected(
                f"Fields '{name_field}' ({describe(name, bare=True)}) and '{url_field}' "
                f"(bucket {describe(from_url, bare=True)}) name different buckets; "
                "give one of them, or make them agree.",
                field=name_field,
            )
        name = from_url
    return name, url


def buckets(data: dict[str, Any]) -> Buckets:
    """The input bucket (required, by name or URL) and the output bucket (input by default)."""
    input_name, input_url = _bucket("inputBucket", "inputBucketUrl", data)
    if input_name is None:
        raise InvalidRequest(
            "The request names no input bucket; it is required, e.g. "
            '"inputBucket": "my-bucket" or "inputBucketUrl": "http://minio:9000/my-bucket".',
            field="inputBucket",
        )
    output_name, output_url = _bucket("outputBucket", "outputBucketUrl", data)
    if output_name is None:
        return Buckets(input_name, input_name, input_url, input_url)
    return Buckets(input_name, output_name, input_url, output_url)


def prefix(data: dict[str, Any]) -> str | None:
    """The object-name prefix shared by one run's inputs, outputs and log."""
    value = _optional_text(data, "prefix")
    if value is not None and (
        len(value) > _PREFIX_MAX_CHARS or not all(char.isprintable() for char in value)
    ):
        raise _reject(
            "prefix", f"must be printable text of at most {_PREFIX_MAX_CHARS} characters", value
        )
    return value


def string_list(data: dict[str, Any], field: str) -> tuple[str, ...] | None:
    """A list of strings such as command or args; None when absent."""
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _reject(field, 'must be an array of strings, e.g. ["python", "run.py"]', value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _reject(f"{field}[{index}]", "must be a string", item)
    return tuple(value)


def _string_map(data: dict[str, Any], field: str) -> dict[str, str]:
    value = data.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _reject(field, 'must be an object of strings, e.g. {"KEY": "value"}', value)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _reject(f"{field}.{key}", "must be a string (quote numbers and booleans)", item)
    return dict(value)


def extra_env(data: dict[str, Any]) -> dict[str, str]:
    """Extra environment variables for the container; the worker's own names are off limits."""
    values = _string_map(data, "env")
    for name in values:
        if not is_env_name(name):
            raise RequestRejected(
                f"Environment variable name {describe(name, bare=True)} in 'env' is invalid: "
                "use letters, digits and '_', not starting with a digit.",
                field=f"env.{name}",
            )
        if name in RESERVED_ENV_NAMES or (
            name.startswith(RESERVED_ENV_PREFIX) and not name.startswith(CALLER_ENV_PREFIXES)
        ):
            raise RequestRejected(
                f"Environment variable {name} in 'env' is set by the worker and cannot be "
                f"overridden; reserved are {', '.join(sorted(RESERVED_ENV_NAMES))} and every "
                f"name starting with {RESERVED_ENV_PREFIX} (but for the names mstc-flow sets, "
                f"{' and '.join(f'{p}*' for p in CALLER_ENV_PREFIXES)}).",
                field=f"env.{name}",
            )
    return values


def _quantity(section: str, name: str, value: object) -> str:
    field = f"resources.{section}.{name}"
    problem = qualified_name_problem(name)
    if problem is not None:
        raise RequestRejected(f"Resource name '{name}' is invalid: {problem}.", field=field)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # Kubernetes accepts plain numbers, e.g. "cpu": 2
    if not isinstance(value, str) or not is_quantity(value):
        raise _reject(field, 'must be a Kubernetes quantity such as "500m", "2" or "4Gi"', value)
    return value


def resources(data: dict[str, Any]) -> Resources | None:
    """Container requests and limits, e.g. {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}}."""
    value = data.get("resources")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _reject("resources", 'must be an object like {"requests": {"cpu": "1"}}', value)
    unknown = sorted(set(value) - {"requests", "limits"})
    if unknown:
        raise RequestRejected(
            f"Field 'resources' accepts only 'requests' and 'limits'; got '{unknown[0]}'.",
            field=f"resources.{unknown[0]}",
        )
    sections = {section: _section(value, section) for section in ("requests", "limits")}
    checked = {
        section: {name: _quantity(section, name, item) for name, item in items.items()}
        for section, items in sections.items()
    }
    if not any(checked.values()):
        return None
    return Resources(**checked)


def _section(value: dict[str, Any], section: str) -> dict[str, Any]:
    items = value.get(section)
    if items is None:
        return {}
    if not isinstance(items, dict):
        raise _reject(f"resources.{section}", 'must be an object like {"cpu": "1"}', items)
    return items


def _reserved_key(key: str) -> bool:
    domain, slash, _ = key.rpartition("/")
    if not slash:
        return key in _RESERVED_PLAIN_KEYS
    return any(domain == d or domain.endswith(f".{d}") for d in _RESERVED_KEY_DOMAINS)


def _check_keys(field: str, values: dict[str, str], allow: KeyAllowList) -> None:
    kind = "label" if field == "labels" else "annotation"
    for key in values:
        problem = label_key_problem(key) if kind == "label" else annotation_key_problem(key)
        if problem is not None:
            message = f"{kind.capitalize()} key {describe(key, bare=True)} is invalid: {problem}."
            raise RequestRejected(message, field=f"{field}.{key}")
        if _reserved_key(key):
            raise RequestRejected(
                f"{kind.capitalize()} key '{key}' is reserved for the worker or Kubernetes; "
                f"keys under {', '.join(f'{d}/' for d in _RESERVED_KEY_DOMAINS)} and the keys "
                f"{', '.join(sorted(_RESERVED_PLAIN_KEYS))} cannot be set by a request.",
                field=f"{field}.{key}",
            )
        if not key.startswith(allow.prefixes):
            named = ", ".join(f"'{prefix}'" for prefix in allow.prefixes) or "none"
            raise RequestRejected(
                f"{kind.capitalize()} key '{key}' in '{field}' is not allowed by this worker: "
                f"a request's {kind} keys must start with a prefix its operator listed in "
                f"{allow.setting} (listed: {named}).",
                field=f"{field}.{key}",
            )


def extra_labels(data: dict[str, Any], allow: KeyAllowList) -> dict[str, str]:
    """Extra labels for the Job and its pod, each key under one of the allowed prefixes."""
    values = _string_map(data, "labels")
    _check_keys("labels", values, allow)
    for key, value in values.items():
        problem = label_value_problem(value)
        if problem is not None:
            raise _reject(f"labels.{key}", f"is not a valid label value ({problem})", value)
    return values


def pod_annotations(data: dict[str, Any], allow: KeyAllowList) -> dict[str, str]:
    """Extra annotations for the Job's pod, each key under one of the allowed prefixes."""
    values = _string_map(data, "annotations")
    _check_keys("annotations", values, allow)
    size = sum(len(key.encode()) + len(value.encode()) for key, value in values.items())
    if size > _ANNOTATIONS_MAX_BYTES:
        raise RequestRejected(
            f"Field 'annotations' holds {size} bytes; Kubernetes allows at most "
            f"{_ANNOTATIONS_MAX_BYTES} bytes of annotations.",
            field="annotations",
        )
    return values


def _pod_count(data: dict[str, Any], field: str, high: int, setting: str) -> int | None:
    """A count of pods from 1 to the operator's bound, or None when absent."""
    return whole_number(
        data,
        field,
        low=1,
        high=high,
        meaning=f"a whole number of pods from 1 to {high} (this worker's {setting})",
    )


def fan_out(data: dict[str, Any], *, max_parallelism: int, max_completions: int) -> FanOut:
    """The request's `completions`, `parallelism` and `completionMode`.

    Either count defaults to the other, so `{"parallelism": 5}` runs five pods at once that
    must all succeed, and `{"completions": 20}` runs as many of the twenty at once as
    `MSTC_MAX_PARALLELISM` allows. More pods at once than completions would only idle, so
    `parallelism` above `completions` is refused rather than silently cut.
    """
    completions = _pod_count(data, "completions", max_completions, "MSTC_MAX_COMPLETIONS")
    parallelism = _pod_count(data, "parallelism", max_parallelism, "MSTC_MAX_PARALLELISM")
    mode = _optional_text(data, "completionMode") or COMPLETION_MODES[0]
    if mode not in COMPLETION_MODES:
        raise _reject("completionMode", 'must be "NonIndexed" (the default) or "Indexed"', mode)
    if completions is None:
        completions = parallelism or 1
    if parallelism is None:
        parallelism = min(completions, max_parallelism)
    if parallelism > completions:
        raise RequestRejected(
            f"Field 'parallelism' ({parallelism}) must not exceed 'completions' "
            f"({completions}): no more pods can run at once than must complete.",
            field="parallelism",
        )
    return FanOut(completions=completions, parallelism=parallelism, indexed=mode == "Indexed")


def task_queue(data: dict[str, Any], *, enabled: bool) -> str | None:
    """The task queue the Job's pods share (``taskQueue``), or None; see `task_queues`.

    `enabled` says whether this worker's operator set it up (MSTC_TASKS_*): without it the
    worker cannot give the pods credentials of their own, and never gives them its own.
    """
    name = _optional_text(data, "taskQueue")
    if name is None:
        return None
    problem = task_queues.name_problem(name)
    if problem is not None:
        raise _reject("taskQueue", f"must name a task queue: {problem}", name)
    if not enabled:
        raise RequestRejected(
            "Field 'taskQueue' asks for a task queue, but this worker offers none: its operator "
            "has not set MSTC_TASKS_MANAGEMENT_URL, MSTC_TASKS_ADMIN_USER and "
            "MSTC_TASKS_ADMIN_PASS. Send the request without 'taskQueue', or to a worker "
            "that offers task queues.",
            field="taskQueue",
        )
    return name


# Where the container runtime mounts its own filesystems: an emptyDir there would hide them.
_RUNTIME_PATHS = ("/proc", "/sys", "/dev")
_MOUNT_PATH_MAX = 1024


def scratch(data: dict[str, Any]) -> Scratch | None:
    """`scratch`: {"mountPath": "/abs/path", "sizeLimit": "20Gi"} (sizeLimit optional)."""
    value = data.get("scratch")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _reject("scratch", 'must be an object like {"mountPath": "/scratch"}', value)
    unknown = sorted(set(value) - {"mountPath", "sizeLimit"})
    if unknown:
        raise RequestRejected(
            f"Field 'scratch' accepts only 'mountPath' and 'sizeLimit'; got '{unknown[0]}'.",
            field=f"scratch.{unknown[0]}",
        )
    size = value.get("sizeLimit")
    if size is not None and (not isinstance(size, str) or not is_quantity(size)):
        raise _reject("scratch.sizeLimit", 'must be a Kubernetes quantity such as "20Gi"', size)
    return Scratch(mount_path=_mount_path(value.get("mountPath")), size_limit=size)


def _mount_path(path: object) -> str:
    field = "scratch.mountPath"
    if not isinstance(path, str) or not path.startswith("/"):
        raise _reject(field, 'must be an absolute path such as "/scratch"', path)
    if len(path) > _MOUNT_PATH_MAX or "\x00" in path or ":" in path:
        raise _reject(
            field, f"must be a path of at most {_MOUNT_PATH_MAX} characters without ':'", path
        )
    parts = [part for part in path.split("/") if part]
    if ".." in parts or "." in parts:
        raise _reject(field, "must not contain '.' or '..' steps", path)
    normal = "/" + "/".join(parts)
    if normal == "/" or any(normal == p or normal.startswith(p + "/") for p in _RUNTIME_PATHS):
        raise _reject(field, f"must not be '/' or under {', '.join(_RUNTIME_PATHS)}", path)
    return normal
