"""What a Job may do in MinIO: the session policy, lifetime and Secret of its own credentials.

Each Job gets temporary MinIO credentials of its own (MinIO's STS AssumeRole, made by
`storage`), limited by an inline session policy to what its request named, instead of
MinIO's root key: an image that misbehaves can then touch nothing but its run's objects.
This module is pure, so the exact rules are unit-tested here and the stack tests show that
the real MinIO enforces them. The grant, in MinIO's action names:

- ``s3:GetBucketLocation`` on both buckets: S3 clients ask a bucket's region first;
- read: ``s3:GetObject`` on ``<input>/<prefix>*`` and ``s3:ListBucket`` on the input bucket
  only for listings under the prefix (a HEAD of the bucket, which carries no prefix, is then
  refused: list with the prefix to see whether inputs exist);
- write: ``s3:PutObject`` and the multipart calls on ``<output>/<prefix>*``, and
  ``s3:CreateBucket`` of the output bucket, which the worker and the example job create on
  demand. Nothing else: no delete, no other bucket or prefix, no admin call.

Without a prefix the whole input bucket is readable and the whole output bucket writable, as
the request asked. ``*``, ``?`` and ``$`` in a prefix would be wildcards or policy variables
in the policy, so the grant stops before the first of them: a grant no wider than what a
request with that shorter prefix gets anyway.

The credentials reach the Job through a Secret owned by the Job (Kubernetes deletes it with
the Job), named after the Job; its keys are the `names` JOB_* constants. The same Secret
carries the Job's task-queue login when its request named a task queue (`task_queues`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mstc_worker.names import (
    CREATED_BY,
    JOB_ACCESS_KEY,
    JOB_SECRET_KEY,
    JOB_SESSION_TOKEN,
    JOB_TASKS_URL,
    LABEL_CREATED_BY,
    LABEL_PART_OF,
    PART_OF,
)

__all__ = [
    "CREDENTIAL_MARGIN_SECONDS",
    "MAX_CREDENTIAL_SECONDS",
    "MIN_CREDENTIAL_SECONDS",
    "credential_seconds",
    "credentials_secret",
    "credentials_secret_name",
    "granted_prefix",
    "session_policy",
]

# MinIO's range for AssumeRole's DurationSeconds: 15 minutes to 365 days.
MIN_CREDENTIAL_SECONDS = 900
MAX_CREDENTIAL_SECONDS = 365 * 24 * 3600
# Beyond the Job's deadline: the credentials are made before the Job exists, and the
# deadline only starts counting when the Job starts.
CREDENTIAL_MARGIN_SECONDS = 900
_POLICY_SPECIAL = ("*", "?", "$")
_SECRET_SUFFIX = "-storage"  # noqa: S105 - a name, not a password


def granted_prefix(prefix: str | None) -> str:
    """The object-name prefix the grant covers: `prefix` up to its first wildcard."""
    text = prefix or ""
    cut = min((text.index(char) for char in _POLICY_SPECIAL if char in text), default=len(text))
    return text[:cut]


def credential_seconds(deadline_seconds: int) -> int:
    """How long a Job's credentials live: its deadline plus a margin, within MinIO's range."""
    wanted = deadline_seconds + CREDENTIAL_MARGIN_SECONDS
    return max(MIN_CREDENTIAL_SECONDS, min(MAX_CREDENTIAL_SECONDS, wanted))


def session_policy(input_bucket: str, output_bucket: str, prefix: str | None) -> str:
    """The inline session policy (JSON) of a Job that reads `input_bucket` and writes
    `output_bucket`, both under `prefix`."""
    start = granted_prefix(prefix)
    statements: list[dict[str, Any]] = [
        _allow(["s3:GetBucketLocation"], _buckets(input_bucket, output_bucket)),
        _allow(["s3:GetObject"], [f"arn:aws:s3:::{input_bucket}/{start}*"]),
        _allow(
            ["s3:ListBucket"],
            [f"arn:aws:s3:::{input_bucket}"],
            {"StringLike": {"s3:prefix": [f"{start}*"]}} if start else None,
        ),
        _allow(
            ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            [f"arn:aws:s3:::{output_bucket}/{start}*"],
        ),
        _allow(["s3:CreateBucket"], [f"arn:aws:s3:::{output_bucket}"]),
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def _buckets(*names: str) -> list[str]:
    return [f"arn:aws:s3:::{name}" for name in dict.fromkeys(names)]


def _allow(
    actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def credentials_secret_name(job_name: str) -> str:
    """The Secret holding a Job's credentials (a Job name is at most 63 characters)."""
    return f"{job_name}{_SECRET_SUFFIX}"


def credentials_secret(
    job_name: str,
    job_uid: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    tasks_url: str | None = None,
) -> dict[str, Any]:
    """The v1 Secret of a Job's credentials, owned by the Job so that it goes with it.

    The MinIO key when the Job has one of its own, the task-queue URL (its RabbitMQ login)
    when its request named a task queue. No ``blockOwnerDeletion``: setting it needs rights
    on the Job's finalizers, and the garbage collector deletes the Secret after the Job
    either way.
    """
    given = {
        JOB_ACCESS_KEY: access_key,
        JOB_SECRET_KEY: secret_key,
        JOB_SESSION_TOKEN: session_token,
        JOB_TASKS_URL: tasks_url,
    }
    values = {key: value for key, value in given.items() if value is not None}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": credentials_secret_name(job_name),
            "labels": {LABEL_PART_OF: PART_OF, LABEL_CREATED_BY: CREATED_BY},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}
            ],
        },
        # Never logged; base64 is the API's encoding, not protection.
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }
