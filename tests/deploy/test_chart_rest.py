"""The chart's REST token: a generated Secret, kept across upgrades, mounted as the worker's file.

POST /mstc/worker/execute needs the token in MSTC_HTTP_TOKEN_FILE; the chart makes it (or
mounts the user's Secret), and without it the worker keeps execute off.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, find, helm, kubectl, render, set_args
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

SECRET = "t-mstc-cloud-worker-http-token"


def worker_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(objects, "Deployment", "t-mstc-cloud-worker")["spec"]["template"]["spec"])


def token_file_and_source(pod: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """Where MSTC_HTTP_TOKEN_FILE points, and the Secret volume mounted there (if any)."""
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = env.get("MSTC_HTTP_TOKEN_FILE")
    if path is None:
        return None, None
    directory, _, file = path.rpartition("/")
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert mount["readOnly"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["items"] == [{"key": "token", "path": file}]
    return path, secret


def token_of(objects: list[dict[str, Any]]) -> str:
    return base64.b64decode(find(objects, "Secret", SECRET)["data"]["token"]).decode()


def test_a_token_is_generated_and_mounted_as_the_worker_s_token_file(stack: StackInfo) -> None:
    first, second = render(stack, {}), render(stack, {})

    path, secret = token_file_and_source(worker_pod(first))
    assert path is not None
    assert secret is not None
    assert secret["secretName"] == SECRET
    token = token_of(first)
    assert len(token) == 40
    assert token.isalnum()
    assert token != token_of(second)  # nothing installed, nothing to keep: a fresh one


def test_an_existing_secret_is_mounted_and_none_is_made(stack: StackInfo) -> None:
    objects = render(stack, {"restApi.existingSecret": "my-token"})

    _, secret = token_file_and_source(worker_pod(objects))
    assert secret is not None
    assert secret["secretName"] == "my-token"
    assert not [
        o for o in objects if o["kind"] == "Secret" and "http-token" in o["metadata"]["name"]
    ]


def test_rest_off_makes_no_token_and_mounts_none(stack: StackInfo) -> None:
    objects = render(stack, {"restApi.enabled": "false"})

    assert token_file_and_source(worker_pod(objects)) == (None, None)
    assert not [
        o for o in objects if o["kind"] == "Secret" and "http-token" in o["metadata"]["name"]
    ]


def test_an_upgrade_keeps_the_token_already_installed(stack: StackInfo, namespace: str) -> None:
    kubectl(stack, "-n", namespace, "create", "secret", "generic", SECRET,
            "--from-literal=token=the-token-clients-already-use")  # fmt: skip
    # --dry-run=server lets the templates' `lookup` read the cluster, as install and upgrade do.
    out = helm(stack, "template", "t", str(CHART), "-n", namespace, "--dry-run=server",
               *set_args({}))  # fmt: skip
    objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    assert token_of(objects) == "the-token-clients-already-use"


def test_notes_say_how_to_read_the_token(stack: StackInfo, namespace: str) -> None:
    out = helm(stack, "install", "t", str(CHART), "-n", namespace, "--dry-run=server")
    notes = out.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {namespace} get secret {SECRET} -o jsonpath='{{.data.token}}'" in notes
    assert "Authorization: Bearer $TOKEN" in notes
