"""What a Job that asked for a task queue may do in RabbitMQ: names, grant, password, pod env.

A request may name a task queue (``"taskQueue": "NAME"``); its pods then share the tasks of
the durable queue ``mstc.tasks.NAME`` through `mstc_client.tasks.TaskQueue`. The pods never
get the worker's own broker login: the worker makes one RabbitMQ user per Job
(``rabbit_admin``), allowed exactly that queue and the direct exchange of the same name that
feeds it (configure, write and read all match only ``^mstc\\.tasks\\.NAME$``). So a pod may
declare, fill and drain its queue, and is refused (ACCESS_REFUSED) on every other queue and
exchange, the default exchange (which reaches every queue) and the worker's work queue
included.

Pure, so the exact rules are unit-tested here; the stack tests show RabbitMQ enforcing them.
The client checks the same name rule (the worker and the client share no code).

The user's password is derived from the Job's uid with a key only the worker holds (HMAC),
not drawn at random: a request delivered again after the Job's Secret was made finds the
Secret kept as it was (the worker can only create Secrets), and setting the user again must
give it the password that Secret already holds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import NamedTuple
from urllib.parse import quote

__all__ = [
    "QUEUE_PREFIX",
    "TASKS_URL_ENV",
    "TASK_QUEUE_ENV",
    "USER_PREFIX",
    "Grant",
    "grant_for",
    "job_of_user",
    "name_problem",
    "queue_name",
    "tasks_url",
    "user_name",
    "user_password",
]

QUEUE_PREFIX = "mstc.tasks."
# What a pod reads (mstc_client.tasks.TaskQueue.from_env); MSTC_ names, which requests may not set.
TASKS_URL_ENV = "MSTC_TASKS_URL"
TASK_QUEUE_ENV = "MSTC_TASK_QUEUE"
# Users the worker made: mstc.job.<namespace>.<job name>. Neither part holds a dot (both are
# DNS-1123 labels), so the sweep can read the Job back from the name.
USER_PREFIX = "mstc.job."
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


class Grant(NamedTuple):
    """RabbitMQ's three permission patterns of one user in one vhost."""

    configure: str
    write: str
    read: str


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a task queue, or None. No dots or wildcards: the name goes
    into a permission pattern, which must match the one queue only."""
    if _NAME.fullmatch(name):
        return None
    return "it must have 1 to 100 letters, digits, '_' and '-', starting with a letter or digit"


def queue_name(name: str) -> str:
    """The durable queue (and the exchange feeding it) of the task queue `name`."""
    return f"{QUEUE_PREFIX}{name}"


def grant_for(name: str) -> Grant:
    """Exactly the queue and exchange of task queue `name`, for all three kinds of access."""
    pattern = f"^{re.escape(queue_name(name))}$"
    return Grant(configure=pattern, write=pattern, read=pattern)


def user_name(namespace: str, job_name: str) -> str:
    return f"{USER_PREFIX}{namespace}.{job_name}"


def job_of_user(user: str, namespace: str) -> str | None:
    """The Job a user was made for, if the worker made it for a Job in `namespace`."""
    start = f"{USER_PREFIX}{namespace}."
    if not user.startswith(start):
        return None
    job = user[len(start) :]
    return job if job and "." not in job else None


def user_password(key: str, job_uid: str) -> str:
    """The Job's password: the same for the same Job, unguessable without `key`."""
    digest = hmac.new(key.encode(), f"mstc-task-user:{job_uid}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def tasks_url(host: str, port: int, vhost: str, user: str, password: str) -> str:
    """The AMQP URL a pod connects with (every part quoted: a vhost may be "/")."""
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"amqp://{userinfo}@{host}:{port}/{quote(vhost, safe='')}"
