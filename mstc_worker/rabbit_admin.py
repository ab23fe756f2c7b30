"""RabbitMQ's management HTTP API: the users the worker makes for Jobs with a task queue.

The one module that talks to the management API, and the only importer of its HTTP library
(urllib3) for that purpose. It logs in as MSTC_TASKS_ADMIN_USER, a user allowed to manage
users and permissions, which the worker's own AMQP login (WORK_QUEUE_USER) need not be: the
worker's everyday credential then cannot make users, and this one is used for nothing else.
What the users may do is decided in `task_queues`; this module only carries it out.

Errors are the worker's own: a server that cannot be reached, or answers 5xx or 429, is a
`TransientError` (the request is tried again by the service's rules); any other refusal
(401 bad admin login, 403 not an administrator, 400 a bad vhost) is a `PermanentError`.
"""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any
from urllib.parse import quote

import urllib3

from mstc_worker.errors import PermanentError, TransientError
from mstc_worker.settings import Settings
from mstc_worker.task_queues import Grant

__all__ = ["RabbitAdmin", "RabbitAdminRejected", "RabbitAdminUnavailable"]

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
_TRANSIENT_STATUSES = {429, 500, 502, 503, 504}


class RabbitAdminUnavailable(TransientError):
    """The management API could not be reached or was too busy to answer."""


class RabbitAdminRejected(PermanentError):
    """The management API refused the call (admin login, its rights, the vhost)."""


def _path(*parts: str) -> str:
    return "/api/" + "/".join(quote(part, safe="") for part in parts)


class RabbitAdmin:
    """Makes, lists and removes the Jobs' RabbitMQ users in the worker's vhost."""

    def __init__(self, settings: Settings) -> None:
        if not settings.task_queues:
            raise ValueError("task queues are not configured (MSTC_TASKS_*)")
        assert settings.tasks_management_url is not None  # task_queues says so
        assert settings.tasks_admin_user is not None
        assert settings.tasks_admin_pass is not None
        self._base = settings.tasks_management_url.rstrip("/")
        self._vhost = settings.amqp_vhost
        self._headers = {
            **urllib3.make_headers(
                basic_auth=f"{settings.tasks_admin_user}:"
                f"{settings.tasks_admin_pass.get_secret_value()}"
            ),
            "Content-Type": "application/json",
        }
        ca_file = str(settings.tls_ca_file) if settings.tls_ca_file is not None else None
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=20.0),
            retries=urllib3.Retry(total=1, redirect=0),
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file,
        )

    def _send(self, what: str, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        try:
            response = self._http.request(
                method, self._base + path, body=data, headers=self._headers
            )
        except _CONNECTION_ERRORS as exc:
            raise RabbitAdminUnavailable(f"RabbitMQ management API: {what}: {exc}") from exc
        if response.status < 300 or (method == "DELETE" and response.status == 404):
            return json.loads(response.data) if response.data and method == "GET" else None
        text = response.data[:200].decode(errors="replace")
        message = f"RabbitMQ management API: {what}: HTTP {response.status} {text}"
        if response.status in _TRANSIENT_STATUSES:
            raise RabbitAdminUnavailable(message)
        raise RabbitAdminRejected(message)

    def grant(self, user: str, password: str, grant: Grant) -> None:
        """Make (or set again) `user` with `password`, allowed `grant` in the worker's vhost.

        No tags: the user cannot log in to the management API. Topic permissions are not
        given either, so it cannot publish to topic exchanges' keys beyond its grant.
        """
        self._send(f"make user {user}", "PUT", _path("users", user),
                   {"password": password, "tags": ""})  # fmt: skip
        self._send(
            f"set the permissions of {user}",
            "PUT",
            _path("permissions", self._vhost, user),
            {"configure": grant.configure, "write": grant.write, "read": grant.read},
        )
        log.info("task-queue user %s made (vhost %s)", user, self._vhost)

    def remove(self, user: str) -> None:
        """Delete `user` (and its permissions); one already gone is fine.

        Nothing relies on RabbitMQ closing the user's open connections: a Job's pods have
        ended by the time the worker lets the Job go.
        """
        self._send(f"delete user {user}", "DELETE", _path("users", user))
        log.info("task-queue user %s removed", user)

    def users(self, prefix: str) -> list[str]:
        """The names of all users that start with `prefix`."""
        listed = self._send("list users", "GET", "/api/users?columns=name")
        return [str(entry["name"]) for entry in listed if str(entry["name"]).startswith(prefix)]
