"""A Job's own MinIO grant, rule by rule: scope, wildcards, lifetime, the Secret's owner.

That the real MinIO enforces the policy is shown in tests/worker/test_job_credentials.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mstc_worker.job_access import (
    MAX_CREDENTIAL_SECONDS,
    MIN_CREDENTIAL_SECONDS,
    credential_seconds,
    credentials_secret,
    granted_prefix,
    session_policy,
)


def _grants(policy: str) -> dict[str, list[tuple[str, Any]]]:
    """action -> [(resource, condition)] of an Allow-only policy."""
    document = json.loads(policy)
    grants: dict[str, list[tuple[str, Any]]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                grants.setdefault(action, []).append((resource, statement.get("Condition")))
    return grants


def test_reads_only_the_input_prefix_and_writes_only_the_output_prefix() -> None:
    grants = _grants(session_policy("in-b", "out-b", "run-1"))
    assert grants == {
        "s3:GetBucketLocation": [("arn:aws:s3:::in-b", None), ("arn:aws:s3:::out-b", None)],
        "s3:GetObject": [("arn:aws:s3:::in-b/run-1*", None)],
        "s3:ListBucket": [("arn:aws:s3:::in-b", {"StringLike": {"s3:prefix": ["run-1*"]}})],
        "s3:PutObject": [("arn:aws:s3:::out-b/run-1*", None)],
        "s3:AbortMultipartUpload": [("arn:aws:s3:::out-b/run-1*", None)],
        "s3:ListMultipartUploadParts": [("arn:aws:s3:::out-b/run-1*", None)],
        "s3:CreateBucket": [("arn:aws:s3:::out-b", None)],
    }


def test_no_delete_no_admin_and_no_wildcard_bucket_whatever_the_request() -> None:
    for prefix in (None, "", "run-1", "*"):
        grants = _grants(session_policy("in-b", "out-b", prefix))
        assert not [action for action in grants if not action.startswith("s3:")]
        assert not [action for action in grants if "Delete" in action or "*" in action]
        resources = {resource for pairs in grants.values() for resource, _ in pairs}
        buckets = {resource.split(":::")[1].split("/")[0] for resource in resources}
        assert buckets == {"in-b", "out-b"}


def test_without_a_prefix_the_whole_buckets_are_granted() -> None:
    grants = _grants(session_policy("data", "data", None))
    assert grants["s3:GetObject"] == [("arn:aws:s3:::data/*", None)]
    assert grants["s3:ListBucket"] == [("arn:aws:s3:::data", None)]
    assert grants["s3:GetBucketLocation"] == [("arn:aws:s3:::data", None)]


@pytest.mark.parametrize(
    ("prefix", "granted"),
    [("run-1", "run-1"), ("a*b", "a"), ("ab?c", "ab"), ("x${aws:username}", "x"), ("*", "")],
)
def test_a_wildcard_in_the_prefix_ends_the_grant_there(prefix: str, granted: str) -> None:
    assert granted_prefix(prefix) == granted
    grants = _grants(session_policy("in-b", "out-b", prefix))
    assert grants["s3:GetObject"] == [(f"arn:aws:s3:::in-b/{granted}*", None)]


@pytest.mark.parametrize(
    ("deadline", "seconds"),
    [(0, MIN_CREDENTIAL_SECONDS), (60, 960), (900, 1800), (3600, 4500)],
)
def test_credentials_outlive_the_deadline_by_the_margin(deadline: int, seconds: int) -> None:
    assert credential_seconds(deadline) == seconds


def test_credentials_never_ask_minio_for_more_than_it_allows() -> None:
    assert credential_seconds(10**9) == MAX_CREDENTIAL_SECONDS == 365 * 24 * 3600


def test_the_secret_is_owned_by_the_job_and_holds_the_three_parts() -> None:
    secret = credentials_secret(
        "job-1", "uid-1", access_key="AK", secret_key="SK", session_token="TOKEN"
    )
    assert secret["metadata"]["name"] == "job-1-storage"
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "job-1", "uid": "uid-1"}
    ]
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == {"accessKey": "AK", "secretKey": "SK", "sessionToken": "TOKEN"}
