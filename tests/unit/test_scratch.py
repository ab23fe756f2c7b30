"""The `scratch` request field: an emptyDir mounted in the Job's container (pure rules)."""

from __future__ import annotations

from typing import Any

import pytest

from mstc_worker.errors import RequestRejected
from mstc_worker.manifest import build_job
from mstc_worker.protocol import parse_request
from mstc_worker.request_fields import Scratch
from mstc_worker.settings import Settings

from .conftest import MakeBody

REQUEST_ID = "0c3f6b8e-7f7c-4a51-9d53-4c1b61b2f0aa"


def job(body: bytes, settings: Settings) -> dict[str, Any]:
    request = parse_request(body, settings=settings)
    return build_job(request, request_id=REQUEST_ID, settings=settings)


def test_scratch_becomes_an_empty_dir_mounted_in_the_container(
    make_body: MakeBody, settings: Settings
) -> None:
    body = make_body(scratch={"mountPath": "/data/scratch/", "sizeLimit": "20Gi"})
    assert parse_request(body, settings=settings).scratch == Scratch(
        mount_path="/data/scratch", size_limit="20Gi"
    )
    pod = job(body, settings)["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/data/scratch"}]


def test_without_a_size_the_empty_dir_is_unbounded_and_without_scratch_nothing_changes(
    make_body: MakeBody, settings: Settings
) -> None:
    pod = job(make_body(scratch={"mountPath": "/work"}), settings)["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    plain = job(make_body(), settings)["spec"]["template"]["spec"]
    assert "volumes" not in plain
    assert "volumeMounts" not in plain["containers"][0]


@pytest.mark.parametrize(
    ("scratch", "field", "words"),
    [
        ("/scratch", "scratch", "must be an object"),
        ({"mountPath": "/s", "size": "1Gi"}, "scratch.size", "accepts only"),
        ({}, "scratch.mountPath", "must be an absolute path"),
        ({"mountPath": "scratch"}, "scratch.mountPath", "must be an absolute path"),
        ({"mountPath": "/a/../etc"}, "scratch.mountPath", "'.' or '..'"),
        ({"mountPath": "/"}, "scratch.mountPath", "must not be '/'"),
        ({"mountPath": "//proc/x"}, "scratch.mountPath", "under /proc"),
        ({"mountPath": "/dev"}, "scratch.mountPath", "under /proc, /sys, /dev"),
        ({"mountPath": "/a:b"}, "scratch.mountPath", "without ':'"),
        ({"mountPath": "/s", "sizeLimit": "20GB"}, "scratch.sizeLimit", "Kubernetes quantity"),
        ({"mountPath": "/s", "sizeLimit": 20}, "scratch.sizeLimit", "Kubernetes quantity"),
    ],
)
def test_bad_scratch_is_rejected_naming_the_field(
    make_body: MakeBody, settings: Settings, scratch: object, field: str, words: str
) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(scratch=scratch), settings=settings)
    assert caught.value.field == field
    assert words in str(caught.value)
