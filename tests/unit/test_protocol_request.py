"""Request parsing: what the Java worker accepted still parses; the rest is refused precisely."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from mstc_worker.errors import (
    ImageNotAllowed,
    InvalidRequest,
    MalformedRequest,
    RequestRejected,
)
from mstc_worker.protocol import RESERVED_ENV_NAMES, Request, Resources, parse_request
from mstc_worker.settings import Settings

from .conftest import MakeBody, MakeSettings

SEED_001_BODY = (
    b'{"image": "mstc/python-test:latest", "timeOut": 5, "jobName": "test-job",'
    b' "inputBucketUrl": "http://hostname:9000/bucket",'
    b' "outputBucketUrl": "http://hostname:9000/out-bucket"}'
)


def test_seed_001_url_form_parses_with_buckets_from_the_url_paths(settings: Settings) -> None:
    request = parse_request(SEED_001_BODY, settings=settings)
    assert request.image == "mstc/python-test:latest"
    assert request.job_name == "test-job"
    assert request.timeout_minutes == 5
    assert request.input_bucket_url == "http://hostname:9000/bucket"
    assert request.output_bucket_url == "http://hostname:9000/out-bucket"
    assert (request.input_bucket, request.output_bucket) == ("bucket", "out-bucket")


def test_output_url_defaults_to_the_input_url(settings: Settings, make_body: MakeBody) -> None:
    body = make_body(without=("inputBucket",), inputBucketUrl="http://minio:9000/in-bucket/dir")
    request = parse_request(body, settings=settings)
    assert request.output_bucket_url == "http://minio:9000/in-bucket/dir"
    assert (request.input_bucket, request.output_bucket) == ("in-bucket", "in-bucket")


def test_bucket_name_form_with_prefix(settings: Settings, make_body: MakeBody) -> None:
    body = make_body(outputBucket="results", prefix="run-7")
    request = parse_request(body, settings=settings)
    assert (request.input_bucket, request.output_bucket) == ("test-bucket", "results")
    assert request.input_bucket_url is None
    assert request.output_bucket_url is None
    assert request.prefix == "run-7"


def test_output_bucket_defaults_to_the_input_bucket(
    settings: Settings, make_body: MakeBody
) -> None:
    request = parse_request(make_body(), settings=settings)
    assert request.output_bucket == "test-bucket"


def test_output_name_with_input_url_does_not_reuse_the_input_url(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(without=("inputBucket",), inputBucketUrl="http://m/in1", outputBucket="out")
    request = parse_request(body, settings=settings)
    assert (request.output_bucket, request.output_bucket_url) == ("out", None)


def test_both_input_forms_are_accepted_when_they_agree(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(inputBucketUrl="http://minio:9000/test-bucket")
    assert parse_request(body, settings=settings).input_bucket == "test-bucket"


def test_unknown_fields_are_ignored_as_java_did(settings: Settings, make_body: MakeBody) -> None:
    request = parse_request(make_body(color="blue", nested={"x": [1]}), settings=settings)
    assert request.job_name == "test-job"


def test_null_and_empty_optional_fields_count_as_absent(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(outputBucketUrl=None, outputBucket="", prefix="", timeOut=None, env=None)
    request = parse_request(body, settings=settings)
    assert request.output_bucket == "test-bucket"
    assert request.prefix is None
    assert request.env == {}


@pytest.mark.parametrize(
    ("value", "minutes"), [(None, 15), (0, 15), (1, 1), (5.0, 5), (10080, 10080)]
)
def test_timeout_in_minutes_with_zero_or_missing_meaning_the_default(
    settings: Settings, make_body: MakeBody, value: Any, minutes: int
) -> None:
    body = make_body() if value is None else make_body(timeOut=value)
    assert parse_request(body, settings=settings).timeout_minutes == minutes


# What Jackson 2.13.5 (the Java worker's JSON binding, Spring Boot's defaults) made of each
# form of an `int timeOut`, read off a probe of that jar: these forms bound, so Java-era
# clients may send them, and they must keep working here.
@pytest.mark.parametrize(
    ("raw", "minutes"),
    [
        ("2.5", 2),
        ("2.9", 2),
        ("-0.5", 15),  # cut toward zero: 0, which means the default
        ("1e3", 1000),
        ('"15"', 15),
        ('" 15 "', 15),
        ('"+5"', 5),
        ('"\\t7\\n"', 7),
        ('""', 15),
        ('" "', 15),
        ('"null"', 15),
        ('"\u0665"', 5),  # ARABIC-INDIC DIGIT FIVE: Integer.parseInt reads any script's digits
    ],
)
def test_timeout_in_the_forms_javas_json_binding_accepted(
    settings: Settings, raw: str, minutes: int
) -> None:
    body = f'{{"image": "i", "jobName": "j", "inputBucket": "bkt", "timeOut": {raw}}}'
    assert parse_request(body.encode(), settings=settings).timeout_minutes == minutes


# ...and the forms Jackson refused, which are refused here too, naming the field.
@pytest.mark.parametrize(
    "raw",
    ["true", "[5]", "{}", '"5.5"', '"1e3"', '"0x10"', '"1_000"', '"2147483648"', '"9" * 5000'],
)
def test_timeout_in_forms_javas_json_binding_refused(settings: Settings, raw: str) -> None:
    value = "9" * 5000 if raw == '"9" * 5000' else json.loads(raw)
    body = json.dumps({"image": "i", "jobName": "j", "inputBucket": "bkt", "timeOut": value})
    with pytest.raises(RequestRejected) as caught:
        parse_request(body.encode(), settings=settings)
    assert caught.value.field == "timeOut"


def test_default_timeout_comes_from_settings(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_DEFAULT_TIMEOUT_MINUTES="42")
    assert parse_request(make_body(timeOut=0), settings=settings).timeout_minutes == 42


def test_byte_order_mark_is_tolerated(settings: Settings, make_body: MakeBody) -> None:
    request = parse_request(b"\xef\xbb\xbf" + make_body(), settings=settings)
    assert request.image == "mstc/python-test:latest"


def test_body_at_the_size_limit_is_accepted_and_one_byte_more_is_not(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_MAX_BODY_BYTES="200")
    body = make_body()
    body = body[:-1] + b" " * (200 - len(body)) + b"}"
    assert len(body) == 200
    parse_request(body, settings=settings)
    with pytest.raises(MalformedRequest) as caught:
        parse_request(body + b" ", settings=settings)
    assert str(caught.value) == (
        "The request body is 201 bytes, over the limit of 200 bytes; "
        "put large inputs in the input bucket instead."
    )


# Prefixes that let through every label and annotation key the tests below use.
OPEN_KEYS = {
    "MSTC_REQUEST_LABEL_PREFIXES": "team, example.com/",
    "MSTC_REQUEST_ANNOTATION_PREFIXES": "cluster-autoscaler.kubernetes.io/,big",
}


def test_extensions_are_parsed(make_settings: MakeSettings, make_body: MakeBody) -> None:
    settings = make_settings(**OPEN_KEYS)
    body = make_body(
        env={"MODE": "fast", "_x": ""},
        resources={"requests": {"cpu": 0.5, "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
        command=["python", "run.py"],
        args=[],
        labels={"team": "astro", "example.com/tier": ""},
        annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        backoffLimit=2,
    )
    request = parse_request(body, settings=settings)
    assert request.env == {"MODE": "fast", "_x": ""}
    assert request.resources == Resources(
        requests={"cpu": "0.5", "memory": "1Gi"}, limits={"nvidia.com/gpu": "1"}
    )
    assert (request.command, request.args) == (("python", "run.py"), ())
    assert request.labels == {"team": "astro", "example.com/tier": ""}
    assert request.annotations == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    assert request.backoff_limit == 2


def test_empty_resources_count_as_absent(settings: Settings, make_body: MakeBody) -> None:
    body = make_body(resources={"requests": {}, "limits": None})
    assert parse_request(body, settings=settings).resources is None


def test_request_is_immutable(settings: Settings, make_body: MakeBody) -> None:
    request = parse_request(make_body(), settings=settings)
    with pytest.raises(ValidationError):
        request.image = "other"
    assert isinstance(request, Request)


def test_image_allow_list_admits_matching_images(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_IMAGE_ALLOW="registry.example.org/*,mstc/*")
    parse_request(make_body(image="registry.example.org/team/tool:1.2"), settings=settings)
    parse_request(make_body(), settings=settings)


def test_image_outside_the_allow_list_is_refused_naming_the_patterns(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_IMAGE_ALLOW="registry.example.org/*")
    with pytest.raises(ImageNotAllowed) as caught:
        parse_request(make_body(image="docker.io/evil/miner"), settings=settings)
    assert caught.value.field == "image"
    assert str(caught.value) == (
        'Image "docker.io/evil/miner" is not allowed by this worker; '
        "allowed image patterns: 'registry.example.org/*'."
    )


def test_deeply_nested_json_is_refused_without_crashing(settings: Settings) -> None:
    with pytest.raises(MalformedRequest, match="nested too deeply"):
        parse_request(b"[" * 200_000, settings=settings)


@pytest.mark.parametrize("name", [*sorted(RESERVED_ENV_NAMES), "MSTC_ANYTHING"])
def test_reserved_env_names_cannot_be_overridden(
    settings: Settings, make_body: MakeBody, name: str
) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(env={"OK": "1", name: "forged"}), settings=settings)
    assert caught.value.field == f"env.{name}"
    assert str(caught.value).startswith(
        f"Environment variable {name} in 'env' is set by the worker and cannot be overridden;"
    )


def test_the_trigger_and_flow_env_names_mstc_flow_sets_are_allowed(
    settings: Settings, make_body: MakeBody
) -> None:
    env = {"MSTC_TRIGGER_PAYLOAD": "{}", "MSTC_TRIGGER_TOPIC": "a/b", "MSTC_FLOW_ENTRY": "e",
           "MSTC_FLOW_FIRING": "f" * 32}  # fmt: skip
    assert parse_request(make_body(env=env), settings=settings).env == env


def test_env_names_that_look_like_reserved_ones_but_differ_are_allowed(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(env={"mstc_job": "x", "INPUT_BUCKET_2": "y", "MY_MSTC_X": "z"})
    assert len(parse_request(body, settings=settings).env) == 3


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _req(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "image": "mstc/python-test:latest",
        "jobName": "test-job",
        "inputBucket": "test-bucket",
    }
    data.update(fields)
    return _json({k: v for k, v in data.items() if v is not ...})


# (body, error class, field, exact message): the message is what the sender reads.
REJECTIONS: list[tuple[str, bytes, type[RequestRejected], str | None, str]] = [
    ("empty", b"", MalformedRequest, None, "The request body is empty; send a JSON object."),
    ("blank", b" \n", MalformedRequest, None, "The request body is empty; send a JSON object."),
    (
        "not-utf8",
        b'{"image": "\xff"}',
        MalformedRequest,
        None,
        "The request body is not UTF-8 text (byte 11 is invalid); send JSON encoded as UTF-8.",
    ),
    (
        "not-json",
        b"{image: x}",
        MalformedRequest,
        None,
        "The request body is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 2.",
    ),
    (
        "nan",
        b'{"timeOut": NaN}',
        MalformedRequest,
        None,
        "The request body is not valid JSON: NaN is not a JSON value.",
    ),
    (
        "array",
        b"[1, 2]",
        MalformedRequest,
        None,
        'The request body must be a JSON object such as {"image": "...", "jobName": "...", '
        '"inputBucket": "..."}; got an array.',
    ),
    (
        "string",
        b'"run it"',
        MalformedRequest,
        None,
        'The request body must be a JSON object such as {"image": "...", "jobName": "...", '
        '"inputBucket": "..."}; got the string "run it".',
    ),
    (
        "image-missing",
        _req(image=...),
        InvalidRequest,
        "image",
        """Field 'image' is missing; it is required, e.g. "image": "python:3.12".""",
    ),
    (
        "image-null",
        _req(image=None),
        InvalidRequest,
        "image",
        """Field 'image' is missing; it is required, e.g. "image": "python:3.12".""",
    ),
    (
        "image-blank",
        _req(image="  "),
        InvalidRequest,
        "image",
        """Field 'image' is empty; it is required, e.g. "image": "python:3.12".""",
    ),
    (
        "image-number",
        _req(image=5),
        RequestRejected,
        "image",
        """Field 'image' must be a string, e.g. "image": "python:3.12"; got the number 5.""",
    ),
    (
        "image-spaces",
        _req(image="python 3"),
        RequestRejected,
        "image",
        "Field 'image' must not contain spaces or control characters; got the string \"python 3\".",
    ),
    (
        "jobname-missing",
        _req(jobName=...),
        InvalidRequest,
        "jobName",
        """Field 'jobName' is missing; it is required, e.g. "jobName": "my-analysis".""",
    ),
    (
        "jobname-object",
        _req(jobName={}),
        RequestRejected,
        "jobName",
        """Field 'jobName' must be a string, e.g. "jobName": "my-analysis"; got an object.""",
    ),
    (
        "no-input-bucket",
        _req(inputBucket=...),
        InvalidRequest,
        "inputBucket",
        "The request names no input bucket; it is required, e.g. "
        '"inputBucket": "my-bucket" or "inputBucketUrl": "http://minio:9000/my-bucket".',
    ),
    (
        "input-bucket-number",
        _req(inputBucket=7),
        RequestRejected,
        "inputBucket",
        "Field 'inputBucket' must be a string; got the number 7.",
    ),
    (
        "input-bucket-uppercase",
        _req(inputBucket="My_Bucket"),
        RequestRejected,
        "inputBucket",
        """Field 'inputBucket' names the bucket "My_Bucket", which is not a valid bucket name: """
        "it must have 3 to 63 characters, only lower-case letters, digits, '.' and '-', "
        "and start and end with a letter or digit.",
    ),
    (
        "input-bucket-ip",
        _req(inputBucket="192.168.1.10"),
        RequestRejected,
        "inputBucket",
        """Field 'inputBucket' names the bucket "192.168.1.10", which is not a valid bucket """
        "name: it must not look like an IP address.",
    ),
    (
        "input-url-no-scheme",
        _req(inputBucket=..., inputBucketUrl="minio:9000/bucket"),
        RequestRejected,
        "inputBucketUrl",
        "Field 'inputBucketUrl' must be an http(s) URL whose path starts with the bucket, "
        """e.g. http://minio:9000/my-bucket; got the string "minio:9000/bucket".""",
    ),
    (
        "input-url-no-bucket",
        _req(inputBucket=..., inputBucketUrl="http://minio:9000/"),
        RequestRejected,
        "inputBucketUrl",
        "Field 'inputBucketUrl' must be an http(s) URL whose path starts with the bucket, "
        """e.g. http://minio:9000/my-bucket; got the string "http://minio:9000/".""",
    ),
    (
        "input-url-broken-ipv6",
        _req(inputBucket=..., inputBucketUrl="http://[::1/bucket"),
        RequestRejected,
        "inputBucketUrl",
        "Field 'inputBucketUrl' must be an http(s) URL whose path starts with the bucket, "
        """e.g. http://minio:9000/my-bucket; got the string "http://[::1/bucket".""",
    ),
    (
        "input-forms-disagree",
        _req(inputBucketUrl="http://minio:9000/other-bucket"),
        RequestRejected,
        "inputBucket",
        """Fields 'inputBucket' ("test-bucket") and 'inputBucketUrl' (bucket "other-bucket") """
        "name different buckets; give one of them, or make them agree.",
    ),
    (
        "output-url-bad-bucket",
        _req(outputBucketUrl="http://minio:9000/a"),
        RequestRejected,
        "outputBucketUrl",
        """Field 'outputBucketUrl' names the bucket "a", which is not a valid bucket name: """
        "it must have 3 to 63 characters, only lower-case letters, digits, '.' and '-', "
        "and start and end with a letter or digit.",
    ),
    (
        "timeout-negative",
        _req(timeOut=-1),
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        "(0 or absent means the default of 15); got the number -1.",
    ),
    (
        "timeout-above-max",
        _req(timeOut=10081),
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        "(0 or absent means the default of 15); got the number 10081.",
    ),
    (
        "timeout-fraction-string",
        _req(timeOut="2.5"),
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        """(0 or absent means the default of 15); got the string "2.5".""",
    ),
    (
        "timeout-bool",
        _req(timeOut=True),
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        "(0 or absent means the default of 15); got the boolean true.",
    ),
    (
        "timeout-word",
        _req(timeOut="fifteen"),
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        """(0 or absent means the default of 15); got the string "fifteen".""",
    ),
    (
        "timeout-huge",
        b'{"image": "i", "jobName": "j", "inputBucket": "bkt", "timeOut": 1e400}',
        RequestRejected,
        "timeOut",
        "Field 'timeOut' must be a whole number of minutes from 0 to 10080 "
        "(0 or absent means the default of 15); got the number Infinity.",
    ),
    (
        "backoff-too-big",
        _req(backoffLimit=11),
        RequestRejected,
        "backoffLimit",
        "Field 'backoffLimit' must be a whole number of retries from 0 to 10; got the number 11.",
    ),
    (
        "prefix-control",
        _req(prefix="a\nb"),
        RequestRejected,
        "prefix",
        "Field 'prefix' must be printable text of at most 512 characters; "
        'got the string "a\\nb".',
    ),
    (
        "prefix-number",
        _req(prefix=3),
        RequestRejected,
        "prefix",
        "Field 'prefix' must be a string; got the number 3.",
    ),
    (
        "env-not-object",
        _req(env=["A=1"]),
        RequestRejected,
        "env",
        """Field 'env' must be an object of strings, e.g. {"KEY": "value"}; got an array.""",
    ),
    (
        "env-number-value",
        _req(env={"WORKERS": 4}),
        RequestRejected,
        "env.WORKERS",
        "Field 'env.WORKERS' must be a string (quote numbers and booleans); got the number 4.",
    ),
    (
        "env-bad-name",
        _req(env={"MY-VAR": "x"}),
        RequestRejected,
        "env.MY-VAR",
        """Environment variable name "MY-VAR" in 'env' is invalid: use letters, digits """
        "and '_', not starting with a digit.",
    ),
    (
        "resources-string",
        _req(resources="big"),
        RequestRejected,
        "resources",
        """Field 'resources' must be an object like {"requests": {"cpu": "1"}}; """
        'got the string "big".',
    ),
    (
        "resources-typo",
        _req(resources={"limit": {"cpu": "1"}}),
        RequestRejected,
        "resources.limit",
        "Field 'resources' accepts only 'requests' and 'limits'; got 'limit'.",
    ),
    (
        "resources-section-array",
        _req(resources={"limits": ["cpu"]}),
        RequestRejected,
        "resources.limits",
        """Field 'resources.limits' must be an object like {"cpu": "1"}; got an array.""",
    ),
    (
        "resources-bad-quantity",
        _req(resources={"limits": {"memory": "4 GB"}}),
        RequestRejected,
        "resources.limits.memory",
        "Field 'resources.limits.memory' must be a Kubernetes quantity such as "
        '"500m", "2" or "4Gi"; got the string "4 GB".',
    ),
    (
        "resources-negative",
        _req(resources={"requests": {"cpu": -1}}),
        RequestRejected,
        "resources.requests.cpu",
        "Field 'resources.requests.cpu' must be a Kubernetes quantity such as "
        '"500m", "2" or "4Gi"; got the number -1.',
    ),
    (
        "resources-bad-name",
        _req(resources={"limits": {"gpu!": "1"}}),
        RequestRejected,
        "resources.limits.gpu!",
        "Resource name 'gpu!' is invalid: the name part 'gpu!' must consist of letters, "
        "digits, '-', '_' and '.', and start and end with a letter or digit.",
    ),
    (
        "command-string",
        _req(command="python run.py"),
        RequestRejected,
        "command",
        """Field 'command' must be an array of strings, e.g. ["python", "run.py"]; """
        'got the string "python run.py".',
    ),
    (
        "args-number-item",
        _req(args=["--n", 3]),
        RequestRejected,
        "args[1]",
        "Field 'args[1]' must be a string; got the number 3.",
    ),
    (
        "label-bad-key",
        _req(labels={"my team": "a"}),
        RequestRejected,
        "labels.my team",
        """Label key "my team" is invalid: the name part 'my team' must consist of letters, """
        "digits, '-', '_' and '.', and start and end with a letter or digit.",
    ),
    (
        "label-bad-value",
        _req(labels={"team": "astro physics"}),
        RequestRejected,
        "labels.team",
        "Field 'labels.team' is not a valid label value (it must consist of letters, digits, "
        "'-', '_' and '.', and start and end with a letter or digit); "
        'got the string "astro physics".',
    ),
    (
        "annotation-bad-key",
        _req(annotations={"Example.com/x": "1"}),
        RequestRejected,
        "annotations.Example.com/x",
        """Annotation key "Example.com/x" is invalid: the prefix 'Example.com' is not a DNS """
        "subdomain: it must consist of lower-case letters, digits, '-' and '.', with each "
        "dot-separated part starting and ending with a letter or digit.",
    ),
    (
        "annotations-too-big",
        _req(annotations={"big": "x" * 262_142}),
        RequestRejected,
        "annotations",
        "Field 'annotations' holds 262145 bytes; Kubernetes allows at most 262144 bytes "
        "of annotations.",
    ),
]


@pytest.mark.parametrize(
    ("body", "error", "field", "message"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_every_rejection_names_the_field_and_says_what_to_fix(
    make_settings: MakeSettings,
    body: bytes,
    error: type[RequestRejected],
    field: str | None,
    message: str,
) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(body, settings=make_settings(**OPEN_KEYS))
    assert type(caught.value) is error
    assert caught.value.field == field
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("labels", "app.kubernetes.io/name"),
        ("labels", "mstc.io/owner"),
        ("labels", "jobs.mstc.io/owner"),
        ("labels", "batch.kubernetes.io/job-name"),
        ("labels", "job-name"),
        ("labels", "controller-uid"),
        ("annotations", "mstc.io/request-id"),
        ("annotations", "app.kubernetes.io/managed-by"),
    ],
)
def test_keys_under_the_workers_prefixes_are_reserved(
    make_settings: MakeSettings, make_body: MakeBody, kind: str, key: str
) -> None:
    # Even an operator whose prefix would allow them cannot hand the reserved keys out.
    setting = f"MSTC_REQUEST_{kind.upper()[:-1]}_PREFIXES"
    settings = make_settings(**{setting: f"other.org/,{key[:4]}"})
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(**{kind: {key: "x"}}), settings=settings)
    assert caught.value.field == f"{kind}.{key}"
    assert f"key '{key}' is reserved for the worker or Kubernetes" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("labels", "app"),
        ("labels", "team"),
        ("annotations", "container.apparmor.security.beta.kubernetes.io/job"),
        ("annotations", "sidecar.istio.io/inject"),
        ("annotations", "iam.amazonaws.com/role"),
        ("annotations", "vault.hashicorp.com/agent-inject"),
        ("annotations", "mstc.test/run-for"),
    ],
)
def test_no_label_or_annotation_passes_unless_its_prefix_is_allowed(
    settings: Settings, make_body: MakeBody, kind: str, key: str
) -> None:
    setting = f"MSTC_REQUEST_{kind.upper()[:-1]}_PREFIXES"
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(**{kind: {key: "x"}}), settings=settings)
    assert caught.value.field == f"{kind}.{key}"
    assert str(caught.value) == (
        f"{kind[:-1].capitalize()} key '{key}' in '{kind}' is not allowed by this worker: a "
        f"request's {kind[:-1]} keys must start with a prefix its operator listed in "
        f"{setting} (listed: none)."
    )


def test_keys_pass_under_an_allowed_prefix_and_only_there(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(
        MSTC_REQUEST_LABEL_PREFIXES="example.org/, team-",
        MSTC_REQUEST_ANNOTATION_PREFIXES="mstc.test/",
    )
    labels = {"example.org/tier": "gold", "team-name": "astro"}
    annotations = {"mstc.test/run-for": "5s"}
    request = parse_request(make_body(labels=labels, annotations=annotations), settings=settings)
    assert (request.labels, request.annotations) == (labels, annotations)
    for kind, key, listed in [
        ("labels", "app", "'example.org/', 'team-'"),
        ("labels", "team", "'example.org/', 'team-'"),
        ("annotations", "mstc.test", "'mstc.test/'"),
    ]:
        with pytest.raises(RequestRejected) as caught:
            parse_request(make_body(**{kind: {key: "x"}}), settings=settings)
        assert caught.value.field == f"{kind}.{key}"
        assert f"(listed: {listed})." in str(caught.value)


def test_rejections_keep_the_decoder_error_as_cause(settings: Settings) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_request(b"{", settings=settings)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
