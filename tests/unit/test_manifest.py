"""The Job manifest: golden files for its shape, and the naming rules for any jobName.

Golden files live in tests/unit/golden/; after an intended change, regenerate
them with ``MSTC_UPDATE_GOLDEN=1 uv run pytest tests/unit`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from mstc_worker.manifest import (
    FINALIZER,
    JOB_NAME_NAMESPACE,
    REQUEST_ID_ANNOTATION,
    ReplyRoute,
    build_job,
    job_name_for,
    log_object_name,
    sanitise_job_name,
)
from mstc_worker.protocol import RESERVED_ENV_NAMES, parse_request
from mstc_worker.request_fields import RESERVED_ENV_PREFIX
from mstc_worker.settings import Settings

from .conftest import MakeBody, MakeSettings

GOLDEN = Path(__file__).parent / "golden"
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
REQUEST_ID = "5b1f0e0a-5c59-4c8e-9e55-2f0b4c6c8f11"
SEED_001_BODY = (
    b'{"image": "mstc/python-test:latest", "jobName": "test-job",'
    b' "inputBucketUrl": "http://hostname:9000/bucket"}'
)


def _check_golden(name: str, manifest: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    if os.environ.get("MSTC_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return
    assert path.exists(), f"{path} is missing; create it with MSTC_UPDATE_GOLDEN=1"
    assert manifest == json.loads(path.read_text()), f"{path.name} differs from build_job()"


def _job(body: bytes, settings: Settings, request_id: str = REQUEST_ID) -> dict[str, Any]:
    return build_job(
        parse_request(body, settings=settings), request_id=request_id, settings=settings
    )


def test_golden_seed_001_url_form(settings: Settings) -> None:
    _check_golden("seed_001_url_form", _job(SEED_001_BODY, settings))


def test_golden_bucket_form_with_prefix_and_custom_settings(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(
        MSTC_NAMESPACE="science",
        MSTC_JOB_TTL_SECONDS="120",
        MSTC_MINIO_SECRET_NAME="minio-creds",
        MINIO_SERVICE_HOST="objects",
        MINIO_SERVICE_PORT="9100",
        MSTC_S3_ENDPOINT="http://localhost:19000",
    )
    body = make_body(outputBucket="results", prefix="run-7", timeOut=90)
    _check_golden("bucket_form_with_prefix", _job(body, settings, request_id="amq-msg-42"))


def test_golden_extensions(make_settings: MakeSettings, make_body: MakeBody) -> None:
    settings = make_settings(
        MSTC_REQUEST_LABEL_PREFIXES="team", MSTC_REQUEST_ANNOTATION_PREFIXES="example.com/"
    )
    body = make_body(
        env={"MODE": "fast", "THREADS": "8"},
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
        command=["python", "-m", "analysis"],
        args=["--verbose"],
        labels={"team": "astro"},
        annotations={"example.com/owner": "ada@example.com"},
        backoffLimit=2,
    )
    _check_golden("extensions", _job(body, settings))


def test_golden_awkward_job_name(settings: Settings, make_body: MakeBody) -> None:
    body = make_body(jobName="Ünïcode_Analysis.Run #42 — with a very long descriptive name")
    _check_golden("awkward_job_name", _job(body, settings, request_id="msg-1"))


AWKWARD_NAMES = [
    "test-job",
    "UPPER_CASE_JOB",
    "日本語のジョブ",
    "Café Résumé",
    "🚀🚀🚀",
    "!!!@@@###",
    "",
    "   ",
    "---leading-and-trailing---",
    "123-starts-with-digits",
    "a" * 300,
    "x-" * 100,
    "ends-with-dash-at-the-cut-point-------------------",
    "dots.and_underscores and spaces",
    "\u0000\u001f control",
]


@pytest.mark.parametrize("job_name", AWKWARD_NAMES)
def test_job_name_is_always_a_dns1123_label_of_at_most_63_chars(job_name: str) -> None:
    name = job_name_for(job_name, REQUEST_ID)
    assert len(name) <= 63
    assert DNS1123_LABEL.fullmatch(name), name
    base, suffix = name[:-37], name[-36:]
    assert name[-37] == "-"
    assert base
    assert len(base) <= 26
    assert uuid.UUID(suffix) == uuid.uuid5(JOB_NAME_NAMESPACE, REQUEST_ID)


def test_random_unicode_job_names_always_give_valid_names() -> None:
    rng = random.Random(20240501)
    alphabet = "aZ9-_. /:#é日🚀\t" + "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(50))
    for _ in range(2000):
        job_name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 90)))
        name = job_name_for(job_name, str(rng.random()))
        assert len(name) <= 63, job_name
        assert DNS1123_LABEL.fullmatch(name), job_name
        container = sanitise_job_name(job_name)
        assert len(container) <= 63
        assert DNS1123_LABEL.fullmatch(container), job_name


def test_same_request_id_gives_the_same_name() -> None:
    assert job_name_for("test-job", "corr-1") == job_name_for("test-job", "corr-1")


def test_different_request_ids_give_different_names() -> None:
    names = {job_name_for("test-job", f"corr-{n}") for n in range(1000)}
    assert len(names) == 1000


def test_short_names_keep_the_java_shape() -> None:
    name = job_name_for("test-job", REQUEST_ID)
    assert name == f"test-job-{uuid.uuid5(JOB_NAME_NAMESPACE, REQUEST_ID)}"


def test_an_empty_request_id_is_refused() -> None:
    with pytest.raises(ValueError, match="request_id must not be empty"):
        job_name_for("test-job", "")


def test_building_twice_gives_equal_manifests_and_leaves_the_request_alone(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_REQUEST_LABEL_PREFIXES="team")
    request = parse_request(make_body(labels={"team": "a"}, env={"A": "1"}), settings=settings)
    before = copy.deepcopy(request.model_dump())
    first = build_job(request, request_id=REQUEST_ID, settings=settings)
    first["metadata"]["labels"]["mutated"] = "yes"
    first["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    second = build_job(request, request_id=REQUEST_ID, settings=settings)
    assert "mutated" not in second["metadata"]["labels"]
    assert second["spec"]["template"]["spec"]["containers"][0]["env"]
    assert request.model_dump() == before


def test_labels_are_the_contracts_four_plus_the_requests(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_REQUEST_LABEL_PREFIXES="team")
    job = _job(make_body(jobName="My_Job", labels={"team": "astro"}), settings)
    name = job["metadata"]["name"]
    assert job["metadata"]["labels"] == {
        "team": "astro",
        "app.kubernetes.io/name": "my-job",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "MSTC",
        "app.kubernetes.io/created-by": "mstc-cloud-worker",
    }
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_request_id_annotation_lets_a_restarted_worker_adopt_the_job(
    settings: Settings, make_body: MakeBody
) -> None:
    job = _job(make_body(), settings, request_id="corr-77")
    assert job["metadata"]["annotations"][REQUEST_ID_ANNOTATION] == "corr-77"


def test_job_carries_its_reply_route_and_is_held_until_replied(
    settings: Settings, make_body: MakeBody
) -> None:
    request = parse_request(make_body(prefix="run-1"), settings=settings)
    route = ReplyRoute(reply_to="amq.gen-abc", correlation_id="c-9")
    job = build_job(request, request_id="c-9", settings=settings, route=route)
    assert job["metadata"]["annotations"] == {
        "mstc.io/request-id": "c-9",
        "mstc.io/reply-to": "amq.gen-abc",
        "mstc.io/correlation-id": "c-9",
        "mstc.io/output-bucket": request.output_bucket,
        "mstc.io/prefix": "run-1",
        "mstc.io/claimed-by": "",  # unclaimed: claiming is a test-and-set on it
        # What its events say of the request, readable by any worker that finishes it.
        "mstc.io/event-facts": json.dumps(
            {"image": request.image, "labels": {}, "requestedName": request.job_name},
            separators=(",", ":"),
        ),
    }
    assert job["metadata"]["finalizers"] == [FINALIZER]
    # A request without reply_to is answered on the results queue: the route says so.
    plain = build_job(request, request_id="c-9", settings=settings)
    assert plain["metadata"]["annotations"]["mstc.io/reply-to"] == ""
    assert "mstc.io/correlation-id" not in plain["metadata"]["annotations"]


def test_pod_annotations_come_from_the_request_only_when_given(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_REQUEST_ANNOTATION_PREFIXES="example.com/")
    plain = _job(make_body(), settings)["spec"]["template"]["metadata"]
    assert "annotations" not in plain
    annotated = _job(make_body(annotations={"example.com/a": "b"}), settings)
    assert annotated["spec"]["template"]["metadata"]["annotations"] == {"example.com/a": "b"}


@pytest.mark.parametrize(("minutes", "seconds"), [(0, 15 * 60), (1, 60), (10080, 604800)])
def test_active_deadline_enforces_the_timeout_on_the_cluster(
    settings: Settings, make_body: MakeBody, minutes: int, seconds: int
) -> None:
    spec = _job(make_body(timeOut=minutes), settings)["spec"]
    assert spec["activeDeadlineSeconds"] == seconds


def test_ttl_and_backoff_defaults(settings: Settings, make_body: MakeBody) -> None:
    spec = _job(make_body(), settings)["spec"]
    assert spec["ttlSecondsAfterFinished"] == 30
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_backoff_limit_when_asked(settings: Settings, make_body: MakeBody) -> None:
    assert _job(make_body(backoffLimit=3), settings)["spec"]["backoffLimit"] == 3


def test_one_container_named_after_the_job_with_if_not_present(
    settings: Settings, make_body: MakeBody
) -> None:
    (container,) = _job(make_body(jobName="Test Job"), settings)["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["name"] == "test-job"
    assert container["image"] == "mstc/python-test:latest"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert not {"command", "args", "resources"} & set(container)


def _env(job: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def _values(job: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var["value"] for var in _env(job) if "value" in var}


def test_url_form_sets_url_and_name_variables(settings: Settings) -> None:
    values = _values(_job(SEED_001_BODY, settings))
    assert values["MSTC_JOB"] == "true"
    assert values["INPUT_BUCKET_URL"] == "http://hostname:9000/bucket"
    assert values["OUTPUT_BUCKET_URL"] == "http://hostname:9000/bucket"
    assert (values["INPUT_BUCKET"], values["OUTPUT_BUCKET"]) == ("bucket", "bucket")
    assert "FILE_PREFIX" not in values


def test_name_form_sets_no_url_variables_and_prefix_when_given(
    settings: Settings, make_body: MakeBody
) -> None:
    values = _values(_job(make_body(prefix="run-1"), settings))
    assert not {"INPUT_BUCKET_URL", "OUTPUT_BUCKET_URL"} & set(values)
    assert values["FILE_PREFIX"] == "run-1"


def test_minio_endpoint_is_the_in_cluster_one_and_credentials_come_from_the_jobs_secret(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(
        MINIO_SERVICE_HOST="minio.storage",
        MSTC_S3_ENDPOINT="http://localhost:9000",
        MSTC_MINIO_SECRET_NAME="creds",
    )
    job = _job(make_body(), settings)
    values = _values(job)
    assert (values["MINIO_SERVICE_HOST"], values["MINIO_SERVICE_PORT"]) == ("minio.storage", "9000")
    refs = {var["name"]: var["valueFrom"] for var in _env(job) if "valueFrom" in var}
    own = f"{job['metadata']['name']}-storage"
    assert refs == {
        "MINIO_ROOT_USER": {"secretKeyRef": {"name": own, "key": "accessKey"}},
        "MINIO_ROOT_PASSWORD": {"secretKeyRef": {"name": own, "key": "secretKey"}},
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": own, "key": "accessKey"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": own, "key": "secretKey"}},
        "AWS_SESSION_TOKEN": {"secretKeyRef": {"name": own, "key": "sessionToken"}},
    }
    # No trace of the shared (root) Secret or of any key in the Job.
    assert '"creds"' not in json.dumps(job)
    assert "rootUser" not in json.dumps(job)
    assert "minioadmin" not in json.dumps(job)
    # Created suspended: no pod may start before the worker has made that Secret.
    assert job["spec"]["suspend"] is True


def test_root_credentials_only_when_the_operator_opts_in(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    settings = make_settings(MSTC_MINIO_SECRET_NAME="creds", MSTC_JOB_ROOT_CREDENTIALS="true")
    job = _job(make_body(), settings)
    refs = {var["name"]: var["valueFrom"] for var in _env(job) if "valueFrom" in var}
    assert refs == {
        "MINIO_ROOT_USER": {"secretKeyRef": {"name": "creds", "key": "rootUser"}},
        "MINIO_ROOT_PASSWORD": {"secretKeyRef": {"name": "creds", "key": "rootPassword"}},
    }
    assert "suspend" not in job["spec"]


def test_user_env_follows_the_workers_and_never_repeats_a_name(
    settings: Settings, make_body: MakeBody
) -> None:
    names = [var["name"] for var in _env(_job(make_body(env={"Z": "1", "A": "2"}), settings))]
    assert names[-2:] == ["Z", "A"]
    assert len(names) == len(set(names))


def test_every_variable_the_worker_sets_is_reserved_against_requests(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(
        without=("inputBucket",),
        inputBucketUrl="http://m:9000/in-b",
        outputBucketUrl="http://m:9000/out-b",
        prefix="p",
    )
    names = {var["name"] for var in _env(_job(body, settings))}
    assert names == set(RESERVED_ENV_NAMES)
    assert all(n in RESERVED_ENV_NAMES or n.startswith(RESERVED_ENV_PREFIX) for n in names)


def test_resources_command_and_args_are_passed_through(
    settings: Settings, make_body: MakeBody
) -> None:
    body = make_body(resources={"limits": {"cpu": 2}}, command=["sh", "-c"], args=["echo hi"])
    container = _job(body, settings)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "2"}}
    assert (container["command"], container["args"]) == (["sh", "-c"], ["echo hi"])


def test_manifest_is_plain_json(settings: Settings, make_body: MakeBody) -> None:
    job = _job(make_body(resources={"requests": {"cpu": "1"}}, command=["a"]), settings)
    assert json.loads(json.dumps(job)) == job


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("run-7", f"run-7-{'j' * 5}.log"), (None, "jjjjj.log"), ("", "jjjjj.log")],
)
def test_log_object_name_as_java_era_clients_look_for_it(prefix: str | None, expected: str) -> None:
    assert log_object_name("jjjjj", prefix) == expected


def test_job_pods_are_hardened_by_default_and_root_images_still_run(settings: Settings) -> None:
    pod = _job(SEED_001_BODY, settings)["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False  # no API token for someone's image
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["privileged"] is False
    # Images that run as root keep running: neither runAsNonRoot nor a read-only root.
    assert "runAsNonRoot" not in pod["securityContext"]
    assert container["readOnlyRootFilesystem"] is False
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    # MinIO's address is given explicitly, so nothing depended on the service links.
    assert env["MINIO_SERVICE_HOST"]
    assert env["MINIO_SERVICE_PORT"]


def test_stricter_job_pods_are_a_setting(make_settings: MakeSettings) -> None:
    settings = make_settings(MSTC_JOB_RUN_AS_NON_ROOT="true", MSTC_JOB_READ_ONLY_ROOT="true")
    pod = _job(SEED_001_BODY, settings)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
