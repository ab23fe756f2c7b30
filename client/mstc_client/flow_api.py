"""A small HTTP client for the flow service's API (`mstc-flow`): `FlowApi`, and where it is.

`FlowApiConfig.from_env` reads `MSTC_FLOW_URL` (the service's base URL, e.g.
`http://mstc-flow:8090`; the API is under its `/api/v1`) and `MSTC_FLOW_TOKEN` (the read or
the admin bearer token the chart generated). Every call returns the API's JSON (or a log's
bytes) and raises the client's errors: `AuthError` (401, 403), `FlowNotFound` (404),
`FlowUnreachable` (no answer, or 503) and `FlowApiError` (any other refusal), each with the
server's own sentence. urllib3 is the one HTTP library the client has; no retries here: the
`mstc` command is run again by its user, and a retried POST could fire twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

from mstc_client.errors import (
    AuthError,
    ConfigError,
    FlowApiError,
    FlowNotFound,
    FlowUnreachable,
)

__all__ = ["FlowApi", "FlowApiConfig"]

API_PATH = "/api/v1"
_JSON = "application/json"
_ERROR_CLASSES: dict[int, type[FlowApiError]] = {
    401: AuthError,
    403: AuthError,
    404: FlowNotFound,
    503: FlowUnreachable,
}


@dataclass(frozen=True)
class FlowApiConfig:
    """Where the flow API is and the token to show it."""

    url: str  # base URL, without /api/v1
    token: str = field(repr=False)
    timeout_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlowApiConfig:
        """Read `MSTC_FLOW_URL` and `MSTC_FLOW_TOKEN`; ConfigError names a missing one."""
        source = os.environ if env is None else env
        url = source.get("MSTC_FLOW_URL", "").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "MSTC_FLOW_URL must be the flow service's http(s)://host:port; "
                f"got {url or 'nothing'!r}."
            )
        token = source.get("MSTC_FLOW_TOKEN", "")
        if not token:
            raise ConfigError(
                "MSTC_FLOW_TOKEN is not set: give the flow API's read or admin token "
                "(the chart's Secret holds both)."
            )
        return cls(url=url, token=token)


class FlowApi:
    """The API's calls; a job `key` is its requestId or its made Job's name."""

    def __init__(self, config: FlowApiConfig) -> None:
        self.config = config
        self._http = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(total=config.timeout_seconds)
        )

    def list_jobs(self, filters: Mapping[str, str | int | None]) -> dict[str, Any]:
        """One page: {"items": [...], "nextCursor"}; filters as the API names them."""
        fields = {name: str(value) for name, value in filters.items() if value is not None}
        return self._json("GET", "/jobs", fields=fields)

    def job(self, key: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{_part(key)}")

    def job_events(self, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json("GET", f"/jobs/{_part(key)}/events")["items"]
        return items

    def job_log(self, key: str) -> bytes:
        return self._call("GET", f"/jobs/{_part(key)}/log").data

    def retry(self, key: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{_part(key)}/retry")

    def cancel(self, key: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{_part(key)}/cancel")

    def catalog(self) -> dict[str, Any]:
        return self._json("GET", "/catalog")

    def fire(self, entry: str, payload: bytes) -> dict[str, Any]:
        return self._json("POST", f"/catalog/{_part(entry)}/fire", body=payload)

    def parked(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json("GET", "/parked")["items"]
        return items

    def replicas(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json("GET", "/replicas")["items"]
        return items

    # --- the work queue ------------------------------------------------------------------------

    def queue_status(self) -> dict[str, Any]:
        return self._json("GET", "/queue")

    def purge_queue(self) -> dict[str, Any]:
        return self._json("POST", "/queue/purge")

    # --- pipelines -----------------------------------------------------------------------------

    def submit_pipeline(self, document: bytes, fmt: str = "json") -> dict[str, Any]:
        """POST a pipeline file's text (`fmt` json or yaml): {"id", "name", "tasks", "stages"}."""
        content_type = "application/yaml" if fmt == "yaml" else _JSON
        return self._json("POST", "/pipelines", body=document, content_type=content_type)

    def pipelines(self, state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Summaries, most recent first."""
        fields = {name: str(value) for name, value in (("state", state), ("limit", limit))
                  if value is not None}  # fmt: skip
        items: list[dict[str, Any]] = self._json("GET", "/pipelines", fields=fields)["items"]
        return items

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return self._json("GET", f"/pipelines/{_part(pipeline_id)}")

    def retry_pipeline(self, pipeline_id: str, task: str | None = None) -> dict[str, Any]:
        """`task` and its skipped dependants, or every failed, skipped and cancelled task:
        {"id", "retried": [names]}."""
        body = _json_body({"task": task})
        return self._json("POST", f"/pipelines/{_part(pipeline_id)}/retry", body=body,
                          content_type=_JSON)  # fmt: skip

    def cancel_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        """The pipeline as `pipeline` shows it, once its cancel is recorded."""
        return self._json("POST", f"/pipelines/{_part(pipeline_id)}/cancel")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._call(method, path, **kwargs)
        try:
            data = json.loads(response.data)
        except ValueError as exc:
            raise FlowApiError(
                response.status, f"The flow API answered {path} with no JSON: {exc}."
            ) from exc
        if not isinstance(data, dict):
            raise FlowApiError(response.status, f"The flow API answered {path} with no object.")
        return data

    def _call(
        self,
        method: str,
        path: str,
        fields: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/octet-stream",
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Authorization": f"Bearer {self.config.token}"}
        if body is not None:
            headers["Content-Type"] = content_type
        url = f"{self.config.url}{API_PATH}{path}"
        try:
            response = self._http.request(method, url, fields=fields, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise FlowUnreachable(
                0, f"Cannot reach the flow API at {self.config.url} ({exc}); check MSTC_FLOW_URL."
            ) from exc
        if response.status >= 400:
            raise _error(response)
        return response


def _json_body(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _part(text: str) -> str:
    """`text` as one path segment (a key or an entry name may hold any character)."""
    return quote(text, safe="")


def _error(response: urllib3.BaseHTTPResponse) -> FlowApiError:
    try:
        sentence = str(json.loads(response.data)["error"])
    except (ValueError, KeyError, TypeError):
        sentence = response.data[:200].decode("utf-8", "replace").strip()
        sentence = sentence or f"The flow API answered {response.status}."
    if response.status == 401:
        sentence += " Set MSTC_FLOW_TOKEN to the flow API's read or admin token."
    cls = _ERROR_CLASSES.get(response.status, FlowApiError)
    return cls(response.status, f"{sentence} (HTTP {response.status})")
