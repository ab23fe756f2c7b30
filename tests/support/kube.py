"""Small Kubernetes helpers for tests: Jobs whose fate a test chooses, and waits on watches.

A test never sleeps to let the cluster catch up; it watches for the event it expects.
The pod annotations understood by the stack's KWOK stages (stack/kwok/stages.yaml) are
the only way a test chooses how a pod behaves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

RUN_FOR = "mstc.test/run-for"
EXIT_CODE = "mstc.test/exit-code"
WAITING_REASON = "mstc.test/waiting-reason"


def simulated_job(
    name: str | None = None,
    *,
    run_for: str | None = None,
    exit_code: int | None = None,
    waiting_reason: str | None = None,
    active_deadline_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> k8s.V1Job:
    annotations: dict[str, str] = {}
    if run_for is not None:
        annotations[RUN_FOR] = run_for
    if exit_code is not None:
        annotations[EXIT_CODE] = str(exit_code)
    if waiting_reason is not None:
        annotations[WAITING_REASON] = waiting_reason
    name = name or f"smoke-{uuid.uuid4().hex[:8]}"
    return k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=active_deadline_seconds,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(annotations=annotations),
                spec=k8s.V1PodSpec(
                    restart_policy="Never",
                    containers=[k8s.V1Container(name="main", image="example.invalid/job:1")],
                ),
            ),
        ),
    )


def job_condition(job: k8s.V1Job, kind: str) -> k8s.V1JobCondition | None:
    for cond in (job.status and job.status.conditions) or []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def watch_until(
    list_fn: Callable[..., Any],
    predicate: Callable[[str, Any], bool],
    *,
    timeout: int = 60,
    done_if_empty: bool = False,
    **list_kwargs: Any,
) -> Any:
    """Watch a list call until `predicate(event_type, obj)` holds; return that object.

    The watch starts from a fresh list, so a state reached before the watch began is seen too.
    `done_if_empty`: an empty list is the awaited state (the object is gone already): None.
    """
    initial = list_fn(**list_kwargs)
    if done_if_empty and not initial.items:
        return None
    for item in initial.items:
        if predicate("EXISTING", item):
            return item
    stream = watch.Watch()
    for event in stream.stream(
        list_fn,
        resource_version=initial.metadata.resource_version,
        timeout_seconds=timeout,
        **list_kwargs,
    ):
        if predicate(event["type"], event["object"]):
            stream.stop()
            return event["object"]
    raise TimeoutError(f"no matching event within {timeout} s from {list_fn.__name__}")


def wait_gone(list_fn: Callable[..., Any], *, timeout: int = 60, **list_kwargs: Any) -> None:
    """Return once the list call matches nothing: at once if it is empty, else on DELETED.

    One list, then a watch from that list's version: an object deleted in between is seen.
    """
    initial = list_fn(**list_kwargs)
    remaining = {item.metadata.name for item in initial.items}
    if not remaining:
        return
    stream = watch.Watch()
    for event in stream.stream(
        list_fn,
        resource_version=initial.metadata.resource_version,
        timeout_seconds=timeout,
        **list_kwargs,
    ):
        if event["type"] == "DELETED":
            remaining.discard(event["object"].metadata.name)
        if not remaining:
            stream.stop()
            return
    raise TimeoutError(f"{sorted(remaining)} still there after {timeout} s")


def wait_job(batch: k8s.BatchV1Api, namespace: str, name: str, condition: str) -> k8s.V1Job:
    return watch_until(
        batch.list_namespaced_job,
        lambda _type, job: job_condition(job, condition) is not None,
        namespace=namespace,
        field_selector=f"metadata.name={name}",
    )


def job_pods(core: k8s.CoreV1Api, namespace: str, job_name: str) -> list[k8s.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items)


# What the worker's ServiceAccount must be allowed in its namespace, and nothing more:
# (verb, API group, resource, subresource).
WORKER_ACCESS = [
    *(
        (verb, "batch", "jobs", "")
        for verb in ("create", "get", "list", "watch", "patch", "delete")
    ),
    *((verb, "", "pods", "") for verb in ("get", "list", "watch")),
    ("get", "", "pods", "log"),
    ("create", "", "secrets", ""),
]
# A sample of what it must not be allowed: secrets, changing pods, exec, RBAC, other kinds.
WORKER_DENIED = [
    ("get", "", "secrets", ""),
    ("list", "", "secrets", ""),
    ("watch", "", "secrets", ""),
    ("patch", "", "secrets", ""),
    ("update", "", "secrets", ""),
    ("delete", "", "secrets", ""),
    ("delete", "apps", "deployments", ""),
    ("create", "", "pods", ""),
    ("delete", "", "pods", ""),
    ("update", "batch", "jobs", ""),
    ("create", "", "pods", "exec"),
    ("create", "rbac.authorization.k8s.io", "roles", ""),
]


def sa_allowed(
    api_client: k8s.ApiClient, sa_namespace: str, sa_name: str, namespace: str,
    access: tuple[str, str, str, str],
) -> bool:  # fmt: skip
    """What the API server's SubjectAccessReview says of a ServiceAccount doing `access`."""
    verb, group, resource, subresource = access
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{sa_namespace}:{sa_name}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace,
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource,
            ),
        )
    )
    result = k8s.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(result.status.allowed)
