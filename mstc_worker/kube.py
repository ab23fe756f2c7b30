"""The Kubernetes adapter: create or adopt Jobs, read them, their pods and logs, claim, release.

The only module that imports the kubernetes library. It owns the API calls the worker
makes in its namespace, each translated into the worker's error tree and retried when
worth it (see `kube_errors`). Calls ask for the server's raw JSON and build the plain
views of `kube_views` from it, so no library model type leaks out and one conversion
serves lists, gets and watch events. Clients are built by whoever constructs a
`KubeClient`, never at import time: worker processes are spawned and build their own.

Everything a caller needs is importable from here, including `JobWatcher` (`kube_watch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from mstc_worker.kube_errors import (
    ATTEMPTS,
    CONNECTION_ERRORS,
    KubeRejected,
    KubeUnavailable,
    api_error,
    retrying,
)
from mstc_worker.kube_views import (
    CLAIMED_AT_ANNOTATION,
    CLAIMED_BY_ANNOTATION,
    FAIL_FAST_REASONS,
    JobState,
    JobView,
    PodView,
    WatchError,
    WatchEvent,
    WatchExpired,
    claim_annotations,
    claim_held_elsewhere,
    job_view,
    pod_view,
)
from mstc_worker.kube_watch import JobWatcher, WatchStream
from mstc_worker.names import CREATED_BY, FINALIZER, LABEL_CREATED_BY, LABEL_NAME
from mstc_worker.settings import Settings

__all__ = [
    "CLAIMED_AT_ANNOTATION",
    "CLAIMED_BY_ANNOTATION",
    "FAIL_FAST_REASONS",
    "FINALIZER",
    "JobState",
    "JobView",
    "JobWatcher",
    "KubeClient",
    "KubeRejected",
    "KubeUnavailable",
    "PodView",
    "WatchError",
    "WatchEvent",
    "WatchExpired",
    "WatchStream",
    "new_api_client",
]

T = TypeVar("T")

# Only the worker's own Jobs and their pods (the manifest labels the pod template too).
SELECTOR = f"{LABEL_CREATED_BY}={CREATED_BY}"
# (connect, read) seconds for one ordinary call; watches get their own read timeout.
_TIMEOUT = (5.0, 30.0)
_JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
_PODS = "/api/v1/namespaces/{namespace}/pods"
_SECRETS = "/api/v1/namespaces/{namespace}/secrets"
_MERGE_PATCH = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"


def new_api_client() -> k8s.ApiClient:
    """An ApiClient for this process: in-cluster credentials in a pod, else KUBECONFIG."""
    configuration = k8s.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        path = os.environ.get("KUBECONFIG")
        kwargs = {"config_file": path} if path else {}
        k8s_config.load_kube_config(client_configuration=configuration, **kwargs)
    # Retries are tenacity's job (bounded, logged); urllib3 re-sends at most once, on a
    # pooled connection the server had closed, and reads again only for idempotent calls.
    # Left to itself it would also repeat a GET answered 429/503 with Retry-After, unseen,
    # doubling every attempt against a server that asked for fewer requests.
    configuration.retries = urllib3.Retry(total=1, redirect=0, respect_retry_after_header=False)
    # Two watches plus a handful of finishing threads share one process's pool.
    configuration.connection_pool_maxsize = 32
    return k8s.ApiClient(configuration)


def _translated(what: str, call: Callable[[], T]) -> T:
    """Run one API call, turning library and network errors into the worker's errors."""
    try:
        return call()
    except ApiException as exc:
        raise api_error(
            what, status=exc.status, body=exc.body, headers=exc.headers, http_reason=exc.reason
        ) from exc
    except CONNECTION_ERRORS as exc:
        raise KubeUnavailable(f"{what}: cannot reach the Kubernetes API: {exc}") from exc


def _body(response: Any) -> Any:
    """The JSON of a raw response, releasing its connection back to the pool."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


class KubeClient:
    """The worker's calls on Jobs, Pods and logs, all in ``settings.namespace``."""

    def __init__(self, settings: Settings, *, api_client: k8s.ApiClient | None = None) -> None:
        self.namespace = settings.namespace
        self._api = api_client if api_client is not None else new_api_client()
        self._retrying = retrying()

    def _send(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] = _TIMEOUT,
    ) -> Any:
        """One API request, errors translated, not retried: the raw urllib3 response.

        Plain REST paths instead of the generated BatchV1Api/CoreV1Api methods: the
        worker wants the server's JSON anyway, and patch bodies get an explicit content type.
        """
        return _translated(
            what,
            lambda: self._api.call_api(
                path.format(namespace=self.namespace),
                method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=timeout,
            ),
        )

    def _json(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one request, with KubeUnavailable retried (bounded)."""
        return self._retrying(lambda: _body(self._send(what, method, path, **kwargs)))

    def _json_or_none(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        """Like `_json`, but None when the object does not exist (404)."""
        try:
            return self._json(what, method, path, **kwargs)
        except KubeRejected as exc:
            if exc.status == 404:
                return None
            raise

    # --- Jobs -------------------------------------------------------------------------------

    def create_job(self, manifest: Mapping[str, Any]) -> tuple[JobView, bool]:
        """Create the Job, or adopt the one already named so: ``(view, created)``.

        A redelivered request builds the same name, so 409 AlreadyExists means "this
        request's Job, or a clash": the caller compares the request-id annotation.
        """
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        name = body["metadata"]["name"]

        # One retried unit: a create whose answer was lost may have worked, and the
        # next attempt then adopts the Job it made.
        def create_or_adopt() -> tuple[JobView, bool]:
            try:
                created = _body(self._send(f"create Job {name}", "POST", _JOBS, body=body))
                return job_view(created), True
            except KubeRejected as exc:
                if exc.status != 409:
                    raise
            try:
                existing = _body(self._send(f"read Job {name}", "GET", f"{_JOBS}/{name}"))
            except KubeRejected as exc:
                if exc.status != 404:
                    raise
                # Deleted between our create and our read: the next attempt creates it.
                raise KubeUnavailable(f"create Job {name}: it existed, then vanished") from exc
            return job_view(existing), False

        return self._retrying(create_or_adopt)

    def get_job(self, name: str) -> JobView | None:
        raw = self._json_or_none(f"read Job {name}", "GET", f"{_JOBS}/{name}")
        return None if raw is None else job_view(raw)

    def list_jobs(self) -> tuple[list[JobView], str]:
        """The worker's Jobs in the namespace, and the list's resourceVersion."""
        raw = self._json("list Jobs", "GET", _JOBS, query={"labelSelector": SELECTOR})
        return [job_view(item) for item in raw["items"]], raw["metadata"]["resourceVersion"]

    def delete_job(self, name: str) -> None:
        """Delete the Job and, in the background, its pods; a missing Job is fine.

        Background propagation matters: batch/v1 Jobs orphan their pods by default.
        A Job still holding FINALIZER stays, marked deleting, until `release`.
        """
        query = {"propagationPolicy": "Background"}
        self._json_or_none(f"delete Job {name}", "DELETE", f"{_JOBS}/{name}", query=query)

    def jobs_named(self, name_label: str) -> list[JobView]:
        """The worker's Jobs whose name label (the sanitised requested jobName) is `name_label`."""
        query = {"labelSelector": f"{SELECTOR},{LABEL_NAME}={name_label}"}
        raw = self._json(f"list Jobs named {name_label}", "GET", _JOBS, query=query)
        return [job_view(item) for item in raw["items"]]

    def annotate_job(self, name: str, annotations: Mapping[str, str]) -> JobView | None:
        """Set annotations on Job `name`; its new view, or None when it is gone."""
        patch = {"metadata": {"annotations": dict(annotations)}}
        raw = self._json_or_none(f"annotate Job {name}", "PATCH", f"{_JOBS}/{name}",
                                 body=patch, content_type=_MERGE_PATCH)  # fmt: skip
        return None if raw is None else job_view(raw)

    def stop_job(self, name: str) -> None:
        """End a running Job now: suspend it, so its controller deletes its pods, then delete it.

        Suspending first keeps the controller from starting a new pod for a pod that is
        going, and needs no right to delete pods; the deletion lets the rest of the Job go
        once FINALIZER is released. A missing Job is fine.
        """
        patch = {"spec": {"suspend": True}}
        self._json_or_none(f"suspend Job {name}", "PATCH", f"{_JOBS}/{name}",
                           body=patch, content_type=_MERGE_PATCH)  # fmt: skip
        self.delete_job(name)

    # --- a Job's credentials Secret (job_access) -------------------------------------------

    def create_secret(self, manifest: Mapping[str, Any]) -> bool:
        """Create the Secret; False when one of that name exists already (kept as it is).

        The worker may only create Secrets (not read, change or delete them), so a Secret
        left by an earlier delivery of the same request stays: it belongs to the same Job.
        """
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        name = body["metadata"]["name"]

        def create() -> bool:
            try:
                # The answer echoes the Secret's data: read and dropped, never logged.
                _body(self._send(f"create Secret {name}", "POST", _SECRETS, body=body))
            except KubeRejected as exc:
                if exc.status != 409:
                    raise
                return False
            return True

        return self._retrying(create)

    def resume_job(self, name: str) -> None:
        """Let a suspended Job start its pod (a no-op for one that runs or ran already)."""
        patch = {"spec": {"suspend": False}}
        self._json(
            f"resume Job {name}", "PATCH", f"{_JOBS}/{name}", body=patch, content_type=_MERGE_PATCH
        )

    # --- pods and logs ---------------------------------------------------------------------

    def job_pods(self, job_name: str) -> list[PodView]:
        query = {"labelSelector": f"job-name={job_name}"}
        raw = self._json(f"list pods of Job {job_name}", "GET", _PODS, query=query)
        return [pod_view(item) for item in raw["items"]]

    def list_pods(self) -> tuple[list[PodView], str]:
        """The pods of the worker's Jobs in the namespace, and the list's resourceVersion."""
        raw = self._json("list pods", "GET", _PODS, query={"labelSelector": SELECTOR})
        return [pod_view(item) for item in raw["items"]], raw["metadata"]["resourceVersion"]

    def read_log(
        self, pod_name: str, *, container: str | None = None, limit_bytes: int = 1_048_576
    ) -> str | None:
        """The log of `container` (default: the pod's first container), cut at `limit_bytes`.

        Returns "" when the container never started (400, e.g. an image that cannot be
        pulled): it has no log, and an empty one says so. Returns None when the pod is gone
        (404): whatever it logged is lost, which the person reading must be told.
        """
        what = f"read log of pod {pod_name}"
        if container is None:  # one more request; callers that know the name save it
            pod = self._json_or_none(what, "GET", f"{_PODS}/{pod_name}")
            if pod is None:
                return None
            container = pod["spec"]["containers"][0]["name"]
        query = {"container": container, "limitBytes": limit_bytes}

        def read() -> bytes:
            response = self._send(
                what, "GET", f"{_PODS}/{pod_name}/log", query=query, timeout=(_TIMEOUT[0], 60.0)
            )
            try:
                return bytes(response.data)
            finally:
                response.release_conn()

        try:
            data = self._retrying(read)
        except KubeRejected as exc:
            if exc.status == 400:
                return ""
            if exc.status == 404:
                return None
            raise
        # The cut may split a character; a log is for reading, so replace it.
        return data.decode("utf-8", errors="replace")

    # --- watches (for JobWatcher) ------------------------------------------------------------

    def watch_jobs(
        self, resource_version: str, *, timeout_s: int, keep: Callable[[str], bool] | None = None
    ) -> WatchStream:
        return self._watch("jobs", _JOBS, resource_version, timeout_s, keep)

    def watch_pods(
        self, resource_version: str, *, timeout_s: int, keep: Callable[[str], bool] | None = None
    ) -> WatchStream:
        return self._watch("pods", _PODS, resource_version, timeout_s, keep)

    def _watch(
        self,
        kind: Literal["jobs", "pods"],
        path: str,
        resource_version: str,
        timeout_s: int,
        keep: Callable[[str], bool] | None,
    ) -> WatchStream:
        """Open one watch, not retried: the watcher's loop decides (relist, backoff).

        `keep(job_name)`, if given, picks the Jobs whose events are decoded (see WatchStream).
        """
        query: dict[str, str | int] = {
            "labelSelector": SELECTOR,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_s,
        }
        try:
            # The server ends the watch after timeout_s; the read timeout only catches a
            # connection that died silently.
            timeout = (_TIMEOUT[0], timeout_s + 30.0)
            response = self._send(f"watch {kind}", "GET", path, query=query, timeout=timeout)
        except KubeRejected as exc:
            if exc.status == 410:
                raise WatchExpired(str(exc), status=410) from exc
            raise
        return WatchStream(response, kind, keep=keep)

    # --- claiming and releasing ---------------------------------------------------------------

    def claim(self, job: JobView, holder: str, *, stale_after_s: float) -> JobView | None:
        """Claim a Job for `holder` so that exactly one worker finishes it.

        The claim is a test-and-set of the claimed-by annotation, which every Job is
        created with (empty): a JSON patch that tests the holder seen in `job` and then
        writes ours. The API server applies a patch to the object as it is at that moment,
        so of several workers claiming at once exactly one passes the test and the others
        get 422; status writes by the Job controller in between do not matter, which is
        what a resourceVersion precondition would trip over. A loser re-reads and backs
        off while another holder's claim is younger than `stale_after_s`; a stale one (its
        holder died) is taken over the same way. Jobs made by a worker that predates the
        annotation are claimed with a resourceVersion precondition instead.
        Returns the claimed Job, or None when someone else holds it or it is gone.
        """
        current: JobView | None = job
        for _ in range(2):
            if current is None or current.uid != job.uid:
                return None  # gone, or a new Job of the same name: not the one asked about
            now = datetime.now(UTC)
            if claim_held_elsewhere(current, holder, stale_after_s=stale_after_s, now=now):
                return None
            # Ours already (a retry after a failed finish): claiming again renews it, so it
            # cannot go stale under us while we finish.
            held = current.annotations.get(CLAIMED_BY_ANNOTATION)
            body, content_type = _claim_patch(current, held, claim_annotations(holder, now))
            try:
                raw = self._json(
                    f"claim Job {job.name}",
                    "PATCH",
                    f"{_JOBS}/{job.name}",
                    body=body,
                    content_type=content_type,
                )
                return job_view(raw)
            except KubeRejected as exc:
                if exc.status == 404:
                    return None
                if exc.status not in (409, 422):
                    raise
            current = self.get_job(job.name)
        return None

    def renew_claim(self, name: str, holder: str) -> bool:
        """Stamp `holder`'s claim on Job `name` with the time now; False if it is not held.

        The holder renews while it finishes the Job, so that a slow finish (log reads,
        storage retries, a broker outage before the reply) never looks like a dead holder.
        A JSON patch that tests the holder first: a claim another worker took over (or a Job
        that is gone) is never written back, and the caller learns that it lost the claim.
        """
        stamp = claim_annotations(holder, datetime.now(UTC))[CLAIMED_AT_ANNOTATION]
        patch = [
            {"op": "test", "path": _annotation_path(CLAIMED_BY_ANNOTATION), "value": holder},
            {"op": "add", "path": _annotation_path(CLAIMED_AT_ANNOTATION), "value": stamp},
        ]
        try:
            self._json(f"renew claim on Job {name}", "PATCH", f"{_JOBS}/{name}",
                       body=patch, content_type=_JSON_PATCH)  # fmt: skip
        except KubeRejected as exc:
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    def annotate(self, name: str, key: str, value: str) -> None:
        """Set one annotation on Job `name`; a missing Job is fine (nothing left to mark)."""
        patch = {"metadata": {"annotations": {key: value}}}
        try:
            self._json(f"annotate Job {name}", "PATCH", f"{_JOBS}/{name}", body=patch,
                       content_type=_MERGE_PATCH)  # fmt: skip
        except KubeRejected as exc:
            if exc.status != 404:
                raise

    def release(self, name: str, *, known: JobView | None = None) -> None:
        """Remove FINALIZER from the Job, letting Kubernetes delete it; a missing Job is fine.

        A JSON patch that first tests the list entry removes exactly our finalizer even
        if something else edits the list at the same time (the test then fails with 422,
        and we read again). `known`, a recent view of the Job (the claim's answer), saves
        the first read: the test makes a stale view harmless, it only costs one more round.
        """
        for attempt in range(ATTEMPTS):
            job = known if attempt == 0 and known is not None else self.get_job(name)
            if job is None or FINALIZER not in job.finalizers:
                return
            path = f"/metadata/finalizers/{job.finalizers.index(FINALIZER)}"
            patch = [
                {"op": "test", "path": path, "value": FINALIZER},
                {"op": "remove", "path": path},
            ]
            try:
                self._json(
                    f"release Job {name}",
                    "PATCH",
                    f"{_JOBS}/{name}",
                    body=patch,
                    content_type=_JSON_PATCH,
                )
                return
            except KubeRejected as exc:
                if exc.status == 404:
                    return
                if exc.status not in (409, 422):
                    raise
        raise KubeUnavailable(f"release Job {name}: its finalizers kept changing; try later")


def _annotation_path(key: str) -> str:
    """The JSON pointer of an annotation (RFC 6901 escapes "~" and "/")."""
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def _claim_patch(job: JobView, held: str | None, claim: Mapping[str, str]) -> tuple[Any, str]:
    """The patch that claims `job` if its holder is still `held`, and its content type."""
    if held is None:
        merge = {"metadata": {"resourceVersion": job.resource_version, "annotations": claim}}
        return merge, _MERGE_PATCH
    ops: list[dict[str, str]] = [
        {"op": "test", "path": _annotation_path(CLAIMED_BY_ANNOTATION), "value": held}
    ]
    held_since = job.annotations.get(CLAIMED_AT_ANNOTATION)
    if held_since is not None:
        ops.append(
            {"op": "test", "path": _annotation_path(CLAIMED_AT_ANNOTATION), "value": held_since}
        )
    # "add" sets a member whether or not it exists, which "replace" would not.
    ops += [{"op": "add", "path": _annotation_path(k), "value": v} for k, v in claim.items()]
    return ops, _JSON_PATCH
