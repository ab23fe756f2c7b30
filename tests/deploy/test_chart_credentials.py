"""The chart and storage credentials: the clients' MinIO user, Jobs' keys, the worker's Role.

`helm template` on the stack's helm; the user itself is made on the real MinIO by
tests/client/test_client_user.py with the command the hook runs.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.deploy.conftest import find, render
from tests.deploy.test_chart import env_of
from tests.support.stack import StackInfo

pytestmark = pytest.mark.stack

HOOK = "t-mstc-cloud-worker-client-user"
SECRET = "t-mstc-cloud-worker-minio-client"


def _ref(env: dict[str, Any], name: str) -> tuple[str, str]:
    ref = env[name]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_a_client_user_is_made_by_a_hook_with_a_generated_key(stack: StackInfo) -> None:
    objects = render(stack, {})
    secret = find(objects, "Secret", SECRET)["data"]
    assert base64.b64decode(secret["accessKey"]) == b"mstc-client"
    assert len(base64.b64decode(secret["secretKey"])) == 40
    hook = find(objects, "Job", HOOK)
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = hook["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == ["add-client-user"]
    env = env_of(hook)
    assert _ref(env, "MSTC_CLIENT_ACCESS_KEY") == (SECRET, "accessKey")
    assert _ref(env, "MSTC_CLIENT_SECRET_KEY") == (SECRET, "secretKey")
    assert _ref(env, "MINIO_ROOT_USER") == ("t-minio", "rootUser")  # an admin key signs it


def test_no_client_user_when_switched_off(stack: StackInfo) -> None:
    objects = render(stack, {"clientUser.enabled": "false"})
    assert not [o for o in objects if o["metadata"]["name"] in (HOOK, SECRET)]


@pytest.mark.parametrize(("value", "rendered"), [(None, "false"), ("true", "true")])
def test_jobs_get_root_credentials_only_when_the_values_say_so(
    stack: StackInfo, value: str | None, rendered: str
) -> None:
    values = {} if value is None else {"worker.jobRootCredentials": value}
    worker = find(render(stack, values), "Deployment", "t-mstc-cloud-worker")
    assert env_of(worker)["MSTC_JOB_ROOT_CREDENTIALS"] == rendered


def test_the_worker_may_create_secrets_and_nothing_else_with_them(stack: StackInfo) -> None:
    role = find(render(stack, {}), "Role", "t-mstc-cloud-worker-job-runner")
    rules = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
