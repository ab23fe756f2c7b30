"""The Kubernetes Job for a request, as plain data: name, labels, env, deadline, TTL.

Pure on purpose: the same request and request id always give the same manifest,
which is what makes a redelivered request find its existing Job instead of
starting a second one, and what lets golden files pin the shape the Java worker's
clients and Jobs rely on. The result is a dict in the API server's JSON shape; the
Kubernetes adapter submits it as is.

Naming: the Java worker used ``<jobName>-<uuid4>``, which Kubernetes refused for
jobNames with capitals, underscores or too many characters, and which changed on
every delivery. Here the shape stays, but the jobName is sanitised to DNS-1123
and the uuid is derived from the request id, which `request_identity` makes from the
message's id, where its reply goes and a digest of its body (not from the id alone:
clients number their requests alike, and two of them must never share a Job).

The label, annotation and finalizer names come from `names`, which the Kubernetes adapter
reads too; they are re-exported here for the callers that use them with the request data.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mstc_worker.events import JobFacts, facts_from_annotation, facts_to_annotation
from mstc_worker.job_access import credentials_secret_name
from mstc_worker.kube_syntax import DNS1123_LABEL_MAX, sanitise_dns1123_label
from mstc_worker.names import (
    CLAIMED_AT_ANNOTATION,
    CLAIMED_BY_ANNOTATION,
    CORRELATION_ID_ANNOTATION,
    CREATED_BY,
    EVENT_FACTS_ANNOTATION,
    FINAL_EVENT_ANNOTATION,
    FINAL_EVENT_SENT,
    FINALIZER,
    JOB_ACCESS_KEY,
    JOB_SECRET_KEY,
    JOB_SESSION_TOKEN,
    JOB_TASKS_URL,
    LABEL_CREATED_BY,
    LABEL_INSTANCE,
    LABEL_NAME,
    LABEL_PART_OF,
    MINIO_SECRET_PASSWORD_KEY,
    MINIO_SECRET_USER_KEY,
    OUTPUT_BUCKET_ANNOTATION,
    PART_OF,
    PREFIX_ANNOTATION,
    PROGRESS_ANNOTATION,
    REPLY_ANNOTATIONS,
    REPLY_TO_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    TASK_QUEUE_ANNOTATION,
)
from mstc_worker.protocol import Request
from mstc_worker.settings import Settings
from mstc_worker.task_queues import TASK_QUEUE_ENV, TASKS_URL_ENV

# The names of `mstc_worker.names` are re-exported: callers that build or read a Job's
# request data use them as ``manifest.<NAME>``.
__all__ = [
    "CLAIMED_AT_ANNOTATION",
    "CLAIMED_BY_ANNOTATION",
    "CORRELATION_ID_ANNOTATION",
    "EVENT_FACTS_ANNOTATION",
    "FINALIZER",
    "FINAL_EVENT_ANNOTATION",
    "FINAL_EVENT_SENT",
    "JOB_NAME_NAMESPACE",
    "LABEL_CREATED_BY",
    "LABEL_INSTANCE",
    "LABEL_NAME",
    "LABEL_PART_OF",
    "MINIO_SECRET_PASSWORD_KEY",
    "MINIO_SECRET_USER_KEY",
    "OUTPUT_BUCKET_ANNOTATION",
    "PREFIX_ANNOTATION",
    "PROGRESS_ANNOTATION",
    "REPLY_ANNOTATIONS",
    "REPLY_TO_ANNOTATION",
    "REQUEST_ID_ANNOTATION",
    "SCRATCH_VOLUME",
    "TASK_QUEUE_ANNOTATION",
    "ReplyRoute",
    "build_job",
    "facts_of_job",
    "job_facts",
    "job_labels",
    "job_name_for",
    "log_object_name",
    "request_identity",
    "sanitise_job_name",
]

# Never change this: every Job name derives from it, so a new value would make a
# request redelivered across an upgrade start a second Job.
JOB_NAME_NAMESPACE = uuid.UUID("8b6ca883-d308-4700-ba70-8557070c61ba")
_UUID_CHARS = 36
# The pod volume of a request's `scratch` directory (the only volume a Job's pod has).
SCRATCH_VOLUME = "scratch"
# The base keeps the full uuid within a 63-character name: 63 - 1 - 36 = 26.
_BASE_MAX = DNS1123_LABEL_MAX - 1 - _UUID_CHARS


@dataclass(frozen=True)
class ReplyRoute:
    """Where a request's reply goes: the AMQP reply_to queue ('' = the results queue)."""

    reply_to: str = ""
    correlation_id: str | None = None
    progress: bool = False  # the client asked for progress messages (x-mstc-progress)


def sanitise_job_name(job_name: str) -> str:
    """The jobName as a DNS-1123 label (<= 63 chars): the container name and name label."""
    return sanitise_dns1123_label(job_name)


def request_identity(message_id: str | None, reply_to: str, body: bytes) -> str:
    """The request id of a message: 64 hex digits from its id, its reply queue and its body.

    `message_id` is the client's id for the request (its correlation_id, else its
    message_id); `reply_to` is where its reply goes ('' = the results queue). All three
    count: two clients that both number their requests from "1" reply to different
    queues (and mostly send different bodies), so they never share a Job, while a
    redelivery carries the very same three and so finds its own Job (and its reply
    record) again. A message with no id at all is identified by its route and body
    alone: the same body sent twice to the same reply queue is one request, answered
    once, instead of a fresh id per delivery that made every redelivery a second Job.
    """
    digest = hashlib.sha256(body).hexdigest()
    # JSON keeps the parts apart unambiguously (no id is not the empty id).
    parts = json.dumps([message_id, reply_to, digest], ensure_ascii=True)
    return hashlib.sha256(parts.encode()).hexdigest()


def job_name_for(job_name: str, request_id: str) -> str:
    """The unique Job name ``<sanitised jobName>-<uuid>``, the same for the same request id.

    The base is cut to 26 characters so the whole name fits in 63 while the
    36-character uuid, which carries the uniqueness, stays whole.
    """
    if not request_id:
        # An empty id would give every id-less request the same Job.
        raise ValueError("request_id must not be empty; use request_identity")
    base = sanitise_dns1123_label(job_name, max_length=_BASE_MAX)
    return f"{base}-{uuid.uuid5(JOB_NAME_NAMESPACE, request_id)}"


def log_object_name(job_name: str, prefix: str | None) -> str:
    """The log's object name in the output bucket, as Java-era clients look for it."""
    return f"{prefix}-{job_name}.log" if prefix else f"{job_name}.log"


def job_facts(request: Request, request_id: str, correlation_id: str | None) -> JobFacts:
    """What the request's lifecycle events say of it."""
    return JobFacts(
        request_id=request_id,
        requested_name=request.job_name,
        correlation_id=correlation_id,
        image=request.image,
        labels=dict(request.labels),
    )


def facts_of_job(annotations: Mapping[str, str]) -> JobFacts:
    """The event facts a Job carries (a Job made before events were: only its ids)."""
    return facts_from_annotation(
        annotations.get(EVENT_FACTS_ANNOTATION),
        request_id=annotations.get(REQUEST_ID_ANNOTATION, ""),
        correlation_id=annotations.get(CORRELATION_ID_ANNOTATION),
    )


def job_labels(request: Request, unique_name: str) -> dict[str, str]:
    """The labels of the Job and its pod: the request's own, then the contract's four."""
    return {
        **request.labels,
        LABEL_NAME: sanitise_job_name(request.job_name),
        LABEL_INSTANCE: unique_name,
        LABEL_PART_OF: PART_OF,
        LABEL_CREATED_BY: CREATED_BY,
    }


def build_job(
    request: Request,
    *,
    request_id: str,
    settings: Settings,
    route: ReplyRoute | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job for `request`, named from `request_id` (see `request_identity`)."""
    unique_name = job_name_for(request.job_name, request_id)
    route = route or ReplyRoute()
    annotations = {
        REQUEST_ID_ANNOTATION: request_id,
        REPLY_TO_ANNOTATION: route.reply_to,
        OUTPUT_BUCKET_ANNOTATION: request.output_bucket,
        CLAIMED_BY_ANNOTATION: "",
        EVENT_FACTS_ANNOTATION: facts_to_annotation(
            job_facts(request, request_id, route.correlation_id)
        ),
    }
    if route.correlation_id is not None:
        annotations[CORRELATION_ID_ANNOTATION] = route.correlation_id
    if request.prefix:
        annotations[PREFIX_ANNOTATION] = request.prefix
    if route.progress:
        annotations[PROGRESS_ANNOTATION] = "true"
    if request.task_queue is not None:
        annotations[TASK_QUEUE_ANNOTATION] = request.task_queue
    labels = job_labels(request, unique_name)
    # One try unless asked: a failed container usually fails again, and a
    # retry would double the run time before the reply.
    retries = "backoffLimitPerIndex" if request.fan_out.indexed else "backoffLimit"
    spec: dict[str, Any] = {
        retries: request.backoff_limit,
        # The cluster enforces the timeout even if no worker is watching.
        "activeDeadlineSeconds": request.timeout_minutes * 60,
        "ttlSecondsAfterFinished": settings.job_ttl_seconds,
        **_fan_out(request),
    }
    if not settings.job_root_credentials or request.task_queue is not None:
        # No pod before the Job's credentials Secret exists: it can only be made once the
        # Job has a uid to be owned by; the worker then resumes the Job (runner).
        spec["suspend"] = True
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if request.annotations:
        pod_metadata["annotations"] = dict(request.annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": unique_name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
            "finalizers": [FINALIZER],
        },
        "spec": {
            **spec,
            "template": {
                "metadata": pod_metadata,
                "spec": {
                    "restartPolicy": "Never",
                    # A Job runs someone's image: it gets no API token and no other
                    # Services' addresses (MINIO_SERVICE_* are set explicitly below).
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(settings),
                    "containers": [_container(request, settings, unique_name)],
                    **_scratch_volumes(request),
                },
            },
        },
    }


def _fan_out(request: Request) -> dict[str, Any]:
    """The spec fields of a Job of many pods; none for the single-pod Job (its spec is as ever).

    Retries (`backoffLimit` of the request): Indexed Jobs get them per index
    (`backoffLimitPerIndex`; Kubernetes' `backoffLimit` then defaults to the largest int32), so
    one index failing neither stops nor starves the others, and the Job fails (FailedIndexes)
    once every index has ended and any failed. NonIndexed Jobs keep Kubernetes' `backoffLimit`,
    failures counted over the whole Job: with the default 0 the first failed pod fails the Job
    and the Job controller stops the rest.
    """
    fan_out = request.fan_out
    if fan_out.single:
        return {}
    spec: dict[str, Any] = {"completions": fan_out.completions, "parallelism": fan_out.parallelism}
    if fan_out.indexed:
        spec["completionMode"] = "Indexed"
    return spec


def _pod_security(settings: Settings) -> dict[str, Any]:
    pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if settings.job_run_as_non_root:
        pod["runAsNonRoot"] = True
    return pod


def _container_security(settings: Settings) -> dict[str, Any]:
    """Hardened without breaking images that run as root: root, but a powerless one."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": settings.job_read_only_root,
    }


def _container(request: Request, settings: Settings, unique_name: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": sanitise_job_name(request.job_name),
        "image": request.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(request, settings, unique_name),
        "securityContext": _container_security(settings),
    }
    if request.command:
        container["command"] = list(request.command)
    if request.args:
        container["args"] = list(request.args)
    if request.resources is not None:
        resources = {
            section: dict(values)
            for section, values in (
                ("requests", request.resources.requests),
                ("limits", request.resources.limits),
            )
            if values
        }
        if resources:
            container["resources"] = resources
    if request.scratch is not None:
        container["volumeMounts"] = [
            {"name": SCRATCH_VOLUME, "mountPath": request.scratch.mount_path}
        ]
    return container


def _scratch_volumes(request: Request) -> dict[str, Any]:
    """The pod's `volumes` for a request's scratch directory (none without one)."""
    if request.scratch is None:
        return {}
    empty_dir: dict[str, Any] = {}
    if request.scratch.size_limit is not None:
        # Past it the kubelet evicts the pod: the Job fails rather than fill the node's disk.
        empty_dir["sizeLimit"] = request.scratch.size_limit
    return {"volumes": [{"name": SCRATCH_VOLUME, "emptyDir": empty_dir}]}


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _env(request: Request, settings: Settings, unique_name: str) -> list[dict[str, Any]]:
    """The container's env: the contract's variables first, then the request's own."""
    env = [_value("MSTC_JOB", "true")]
    # The URL variables only when the request used the URL form (seed 001's Jobs
    # read them); the name variables always, as later Jobs read those.
    if request.input_bucket_url is not None:
        env.append(_value("INPUT_BUCKET_URL", request.input_bucket_url))
    if request.output_bucket_url is not None:
        env.append(_value("OUTPUT_BUCKET_URL", request.output_bucket_url))
    env.append(_value("INPUT_BUCKET", request.input_bucket))
    env.append(_value("OUTPUT_BUCKET", request.output_bucket))
    if request.prefix:
        env.append(_value("FILE_PREFIX", request.prefix))
    env.append(_value("MINIO_SERVICE_HOST", settings.minio_service_host))
    env.append(_value("MINIO_SERVICE_PORT", str(settings.minio_service_port)))
    env.extend(_credentials(settings, unique_name))
    if request.task_queue is not None:
        # The Job's own RabbitMQ login, limited to this queue (task_queues), never the worker's.
        env.append(_value(TASK_QUEUE_ENV, request.task_queue))
        env.append(_secret(TASKS_URL_ENV, credentials_secret_name(unique_name), JOB_TASKS_URL))
    env.extend(_value(name, value) for name, value in request.env.items())
    return env


def _credentials(settings: Settings, unique_name: str) -> list[dict[str, Any]]:
    """The MinIO key, by reference: the manifest (and the API server's audit log) never holds it.

    By default the Job's own temporary key (see `job_access`), under the Java-era names images
    read and the standard AWS ones; the shared key of MSTC_MINIO_SECRET_NAME only when the
    operator opted in with MSTC_JOB_ROOT_CREDENTIALS.
    """
    if settings.job_root_credentials:
        secret = settings.minio_secret_name
        return [
            _secret("MINIO_ROOT_USER", secret, MINIO_SECRET_USER_KEY),
            _secret("MINIO_ROOT_PASSWORD", secret, MINIO_SECRET_PASSWORD_KEY),
        ]
    secret = credentials_secret_name(unique_name)
    return [
        _secret("MINIO_ROOT_USER", secret, JOB_ACCESS_KEY),
        _secret("MINIO_ROOT_PASSWORD", secret, JOB_SECRET_KEY),
        _secret("AWS_ACCESS_KEY_ID", secret, JOB_ACCESS_KEY),
        _secret("AWS_SECRET_ACCESS_KEY", secret, JOB_SECRET_KEY),
        _secret("AWS_SESSION_TOKEN", secret, JOB_SESSION_TOKEN),
    ]
