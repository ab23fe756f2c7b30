"""The client's error tree: one base class, one subclass per thing a caller reacts to differently.

Every message says what happened and what to do about it, because these messages end up in
front of people at a terminal (the `mstc` command prints them as they are). The command maps
each class to its own exit code (see `mstc_client.cli`), so scripts can tell "the job failed"
from "the broker is down" without reading text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mstc_client.protocol import Reply

__all__ = [
    "AuthError",
    "BrokerUnreachable",
    "CatalogInvalid",
    "ClientClosed",
    "ConfigError",
    "FlowApiError",
    "FlowNotFound",
    "FlowUnreachable",
    "InputError",
    "JobFailed",
    "JobTimedOut",
    "MstcClientError",
    "PipelineInvalid",
    "RequestRejected",
    "StorageError",
    "StorageUnreachable",
    "TaskNotJson",
    "TaskQueueError",
    "TemplateError",
    "WaitTimeout",
]


class MstcClientError(Exception):
    """Base of every error the client raises on purpose."""


class ConfigError(MstcClientError):
    """A setting (environment variable or argument) is missing or malformed."""


class InputError(MstcClientError):
    """A local input or output path cannot be used (missing, unreadable, clashing names)."""


class BrokerUnreachable(MstcClientError):
    """RabbitMQ could not be reached or refused the client (address, port, credentials)."""


class StorageError(MstcClientError):
    """MinIO/S3 refused an operation (credentials, permissions, bucket name)."""


class StorageUnreachable(StorageError):
    """MinIO/S3 could not be reached at all."""


class ClientClosed(MstcClientError):
    """The client was closed while a request was still waiting for its reply."""


class WaitTimeout(MstcClientError, TimeoutError):
    """No reply arrived within the time the caller was willing to wait.

    The request is not cancelled: its Job may still run and its reply may still come.
    """


class _ReplyError(MstcClientError):
    """An error that comes with the worker's reply, kept on `.reply`."""

    def __init__(self, message: str, reply: Reply) -> None:
        super().__init__(message)
        self.reply = reply


class RequestRejected(_ReplyError):
    """The worker refused the request before creating a Job (bad field, image not allowed)."""


class JobFailed(_ReplyError):
    """The Job ran and failed (non-zero exit, image pull error, ...), or the worker erred."""


class JobTimedOut(_ReplyError):
    """The Job ran longer than its timeOut and the cluster stopped it."""


class TaskQueueError(MstcClientError):
    """RabbitMQ refused a task queue operation; `code` is its AMQP reply code (403: access refused).

    A pod's task-queue credentials reach only its own queue, so 403 ACCESS_REFUSED is what any
    other queue answers. The connection is unusable afterwards: make a new TaskQueue.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TaskNotJson(MstcClientError, TypeError):
    """A task that JSON cannot carry (a set, bytes, an object, NaN): tasks are never pickled."""


class CatalogInvalid(MstcClientError):
    """A catalog (YAML or the MQTT job listener's CSV) refused whole.

    `line` is the 1-based line the problem is on (0: the file as a whole); the message reads
    "SOURCE, line N: REASON" so that an editor can jump to it.
    """

    def __init__(self, source: str, line: int, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {reason}")


class PipelineInvalid(MstcClientError):
    """A pipeline file refused whole, before any of its tasks runs.

    `task` is the task the problem is in (an expanded name such as ``consume-3``, or None for
    the file as a whole), `field` the field (``inputs.shard``, ``after``, ...; None when the
    task as a whole is meant), `line` the 1-based line of the task or field (0: unknown).
    """

    def __init__(
        self, source: str, task: str | None, field: str | None, reason: str, line: int = 0
    ) -> None:
        self.source, self.task, self.field, self.reason, self.line = (
            source, task, field, reason, line
        )  # fmt: skip
        where = [f"{source}, line {line}" if line else source]
        where += [f"task {task}"] if task else []
        where += [field] if field else []
        super().__init__(": ".join([*where, reason]))


class TemplateError(MstcClientError):
    """A catalog entry's request template could not be filled from a trigger's payload."""


class FlowApiError(MstcClientError):
    """The flow service's API refused a call; `status` is the HTTP status (0: no answer).

    The message is the server's own sentence (its `{"error": ...}`), so it says what to fix.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AuthError(FlowApiError):
    """The flow API refused the token: none or an unknown one (401), or a read-only one for a
    change (403). `MSTC_FLOW_TOKEN` holds the token."""


class FlowNotFound(FlowApiError):
    """No such job, catalog entry or log in the flow service (404)."""


class FlowUnreachable(FlowApiError):
    """The flow API did not answer (`status` 0), or answered that it cannot serve now (503)."""
