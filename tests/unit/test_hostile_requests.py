"""Hostile requests: rejected with a reason, or built into a Job that holds no injected keys.

Property-based (hypothesis): job names, env, labels, annotations, command, args and prefixes
drawn from arbitrary text and from strings chosen to break things (line breaks, the worker's
own label and annotation keys, reserved env names, shell syntax, over-long values). For
every one, either the parser refuses the request naming the field, or the manifest is valid
for Kubernetes and the user's values sit only where they belong: the worker's labels,
Job annotations, env and finalizer are its own and nobody else's.

Labels and annotations pass only under prefixes the operator allowed: the first tests run
with every key prefix open (so built Jobs carry hostile keys), the last ones with the
defaults, under which the keys that steer a cluster (AppArmor, Istio, IAM roles, Vault,
a Service's selector) are always refused, naming the field and the setting.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mstc_worker.errors import RequestRejected
from mstc_worker.kube_syntax import (
    annotation_key_problem,
    dns1123_label_problem,
    is_env_name,
    label_key_problem,
    label_value_problem,
)
from mstc_worker.manifest import (
    CLAIMED_BY_ANNOTATION,
    EVENT_FACTS_ANNOTATION,
    FINALIZER,
    LABEL_CREATED_BY,
    LABEL_INSTANCE,
    LABEL_NAME,
    LABEL_PART_OF,
    REPLY_ANNOTATIONS,
    ReplyRoute,
    build_job,
    facts_of_job,
)
from mstc_worker.protocol import RESERVED_ENV_NAMES, Request, parse_request
from mstc_worker.settings import load_settings
from tests.unit.conftest import BASE_ENV

# Every key that starts with a letter or digit is allowed here, so hostile keys reach the
# manifest; the reserved ones must still be refused.
_EVERY_START = ",".join(string.ascii_letters + string.digits)
SETTINGS = load_settings(
    {
        **BASE_ENV,
        "MSTC_REQUEST_LABEL_PREFIXES": _EVERY_START,
        "MSTC_REQUEST_ANNOTATION_PREFIXES": _EVERY_START,
    }
)
DEFAULT_SETTINGS = load_settings(BASE_ENV)
WORKER_ANNOTATIONS = {*REPLY_ANNOTATIONS, CLAIMED_BY_ANNOTATION, EVENT_FACTS_ANNOTATION}
NASTY = [
    "",
    " ",
    "a\nb",
    "x: y\n---\nkind: Secret",
    "$(rm -rf /)",
    "${HOME}",
    "../../etc/passwd",
    "\u202eevil",
    "a" * 300,
    "UPPER_case.Name",
    "-leading-dash",
    LABEL_CREATED_BY,
    LABEL_PART_OF,
    LABEL_INSTANCE,
    CLAIMED_BY_ANNOTATION,
    "mstc.io/reply-to",
    *sorted(RESERVED_ENV_NAMES),
]
hostile = st.one_of(st.sampled_from(NASTY), st.text(max_size=70))
fields = st.fixed_dictionaries(
    {
        "jobName": hostile,
        "prefix": hostile,
        "env": st.dictionaries(hostile, hostile, max_size=4),
        "labels": st.dictionaries(hostile, hostile, max_size=4),
        "annotations": st.dictionaries(hostile, hostile, max_size=4),
        "command": st.lists(hostile, max_size=3),
        "args": st.lists(hostile, max_size=3),
    }
)


FIELD_NAMES = {"jobName", "prefix", "env", "labels", "annotations", "command", "args"}


def _body(values: dict[str, Any]) -> bytes:
    return json.dumps(
        {"image": "example.invalid/job:1", "inputBucket": "in-bucket", **values}
    ).encode()


def _parse(body: bytes) -> Request | RequestRejected:
    try:
        return parse_request(body, settings=SETTINGS)
    except RequestRejected as exc:
        return exc


@settings(
    max_examples=400,
    derandomize=True,  # the same examples on every run: CI stays repeatable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(values=fields)
def test_a_hostile_request_is_refused_or_builds_a_job_without_injection(
    values: dict[str, Any],
) -> None:
    _check(values)


# One hostile field at a time, the others plausible: most of these get built, so the checks
# on the built Job see many more cases.
plausible_key = st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z")
plausible = st.fixed_dictionaries(
    {
        "jobName": plausible_key,
        "prefix": plausible_key,
        "env": st.dictionaries(plausible_key.map(str.upper), st.text(max_size=20), max_size=2),
        "labels": st.dictionaries(plausible_key, plausible_key, max_size=2),
        "annotations": st.dictionaries(plausible_key, st.text(max_size=20), max_size=2),
        "command": st.lists(st.text(max_size=20), max_size=2),
        "args": st.lists(st.text(max_size=20), max_size=2),
    }
)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(base=plausible, hostile_fields=fields, which=st.sampled_from(sorted(FIELD_NAMES)))
def test_one_hostile_field_among_plausible_ones(
    base: dict[str, Any], hostile_fields: dict[str, Any], which: str
) -> None:
    _check({**base, which: hostile_fields[which]})


def _check(values: dict[str, Any]) -> None:
    outcome = _parse(_body(values))
    if isinstance(outcome, RequestRejected):
        event(f"rejected: {outcome.field}")
        assert str(outcome)
        assert outcome.field is None or outcome.field.split(".")[0].split("[")[0] in {
            "image", "inputBucket", *values,
        }  # fmt: skip
        return
    event("built")
    request = outcome
    job = build_job(request, request_id="c-1", settings=SETTINGS, route=ReplyRoute("q", "c-1"))
    meta = job["metadata"]
    assert dns1123_label_problem(meta["name"]) is None
    assert meta["finalizers"] == [FINALIZER]
    # Job annotations are the worker's alone; the user's go on the pod, unchanged.
    assert set(meta["annotations"]) <= WORKER_ANNOTATIONS
    assert meta["annotations"][CLAIMED_BY_ANNOTATION] == ""
    # The request's own name, image and labels travel as JSON, read back exactly.
    facts = facts_of_job(meta["annotations"])
    assert (facts.requested_name, facts.image, facts.labels) == (
        request.job_name, request.image, request.labels,
    )  # fmt: skip
    assert meta["annotations"]["mstc.io/reply-to"] == "q"
    pod_meta = job["spec"]["template"]["metadata"]
    assert pod_meta.get("annotations", {}) == dict(request.annotations)
    assert all(annotation_key_problem(key) is None for key in pod_meta.get("annotations", {}))
    # Labels: valid, and the contract's four say what the worker says, whatever was asked.
    for labels in (meta["labels"], pod_meta["labels"]):
        assert all(label_key_problem(k) is None for k in labels)
        assert all(label_value_problem(v) is None for v in labels.values())
        assert labels[LABEL_CREATED_BY] == "mstc-cloud-worker"
        assert labels[LABEL_PART_OF] == "MSTC"
        assert labels[LABEL_INSTANCE] == meta["name"]
        assert dns1123_label_problem(labels[LABEL_NAME]) is None
    # Env: valid names, each once; the reserved ones are the worker's, the rest as given.
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = container["env"]
    names = [item["name"] for item in env]
    assert len(names) == len(set(names))
    assert all(is_env_name(name) for name in names)
    given_env = {k: v for k, v in request.env.items()}
    assert not set(given_env) & RESERVED_ENV_NAMES
    for item in env:
        if item["name"] in given_env:
            assert item == {"name": item["name"], "value": given_env[item["name"]]}
    assert {"name": "MSTC_JOB", "value": "true"} in env
    # Command and args go through verbatim, as an argv: no shell ever sees them.
    assert container.get("command", []) == list(request.command or ())
    assert container.get("args", []) == list(request.args or ())


# Keys that steer far more than the Job: an unconfined AppArmor profile, an injected mesh
# sidecar, a cloud IAM role, Vault's secret injection, a place behind MinIO's Service.
STEERING_KEYS = {
    "annotations": [
        "container.apparmor.security.beta.kubernetes.io/job",
        "sidecar.istio.io/inject",
        "iam.amazonaws.com/role",
        "vault.hashicorp.com/agent-inject",
        "vault.hashicorp.com/role",
        "seccomp.security.alpha.kubernetes.io/pod",
    ],
    "labels": ["app", "app.kubernetes.io/component", "istio.io/rev", "team"],
}
SETTING_OF = {
    "labels": "MSTC_REQUEST_LABEL_PREFIXES",
    "annotations": "MSTC_REQUEST_ANNOTATION_PREFIXES",
}
steering = st.sampled_from([(kind, key) for kind, keys in STEERING_KEYS.items() for key in keys])


def _refused_naming(outcome: Request | RequestRejected, kind: str, key: str) -> None:
    assert isinstance(outcome, RequestRejected), f"{kind} key {key!r} passed"
    assert outcome.field == f"{kind}.{key}"
    assert key in str(outcome)
    assert SETTING_OF[kind] in str(outcome) or "reserved" in str(outcome)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(base=plausible, pick=steering, value=st.sampled_from(["unconfined", "true", "minio", ""]))
def test_keys_that_steer_the_cluster_are_refused_by_default(
    base: dict[str, Any], pick: tuple[str, str], value: str
) -> None:
    kind, key = pick
    # Only the picked key: under the defaults the plausible ones would be refused first.
    body = _body({**base, "labels": {}, "annotations": {}, kind: {key: value}})
    try:
        outcome: Request | RequestRejected = parse_request(body, settings=DEFAULT_SETTINGS)
    except RequestRejected as exc:
        outcome = exc
    _refused_naming(outcome, kind, key)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    kind=st.sampled_from(["labels", "annotations"]),
    keys=st.dictionaries(st.one_of(st.sampled_from(NASTY), plausible_key), hostile, min_size=1),
)
def test_by_default_no_request_label_or_annotation_passes(kind: str, keys: dict[str, str]) -> None:
    try:
        outcome: Request | RequestRejected = parse_request(
            _body({"jobName": "job", kind: keys}), settings=DEFAULT_SETTINGS
        )
    except RequestRejected as exc:
        outcome = exc
    assert isinstance(outcome, RequestRejected)
    assert str(outcome.field).startswith(f"{kind}.")


@pytest.mark.parametrize("kind", ["labels", "annotations"])
def test_an_allowed_prefix_lets_only_its_own_keys_through(kind: str) -> None:
    allowed = load_settings({**BASE_ENV, SETTING_OF[kind]: "example.org/"})
    good = _parse_with(allowed, {"jobName": "job", kind: {"example.org/tier": "gold"}})
    assert isinstance(good, Request)
    for key in STEERING_KEYS[kind]:
        _refused_naming(_parse_with(allowed, {"jobName": "job", kind: {key: "x"}}), kind, key)


def _parse_with(settings_: Any, values: dict[str, Any]) -> Request | RequestRejected:
    try:
        return parse_request(_body(values), settings=settings_)
    except RequestRejected as exc:
        return exc
