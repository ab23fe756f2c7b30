"""The names the worker writes on Kubernetes objects and reads back: labels, annotations, finalizer.

These strings are the contract between the Job the manifest builds and the adapter that finds,
claims and releases it later (possibly in another worker process or replica), and between the
chart's Secret and the Job's env. They live here, in a module that imports nothing, so that
both `manifest` and the Kubernetes adapter (`kube`, `kube_views`) use one spelling without
the adapter depending on the request model or the settings. Changing any value breaks Jobs
already running when a new worker takes them over.
"""

from __future__ import annotations

__all__ = [
    "CANCEL_AT_ANNOTATION",
    "CANCEL_BY_ANNOTATION",
    "CANCEL_REASON_ANNOTATION",
    "CLAIMED_AT_ANNOTATION",
    "CLAIMED_BY_ANNOTATION",
    "CORRELATION_ID_ANNOTATION",
    "CREATED_BY",
    "EVENT_FACTS_ANNOTATION",
    "FINALIZER",
    "FINAL_EVENT_ANNOTATION",
    "FINAL_EVENT_SENT",
    "JOB_ACCESS_KEY",
    "JOB_SECRET_KEY",
    "JOB_SESSION_TOKEN",
    "JOB_TASKS_URL",
    "LABEL_CREATED_BY",
    "LABEL_INSTANCE",
    "LABEL_NAME",
    "LABEL_PART_OF",
    "MINIO_SECRET_PASSWORD_KEY",
    "MINIO_SECRET_USER_KEY",
    "OUTPUT_BUCKET_ANNOTATION",
    "PART_OF",
    "PREFIX_ANNOTATION",
    "PROGRESS_ANNOTATION",
    "REPLY_ANNOTATIONS",
    "REPLY_TO_ANNOTATION",
    "REQUEST_ID_ANNOTATION",
    "TASK_QUEUE_ANNOTATION",
]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_CREATED_BY = "app.kubernetes.io/created-by"
# The values of the last two labels; the adapter selects the worker's own Jobs and pods by
# LABEL_CREATED_BY=CREATED_BY.
PART_OF = "MSTC"
CREATED_BY = "mstc-cloud-worker"
# Where a restarted worker finds the request a Job belongs to.
REQUEST_ID_ANNOTATION = "mstc.io/request-id"
# The Job is the durable record of a request once it exists: where its reply goes and where
# its log is stored live on it, so any worker (a restarted one, another replica) can finish
# the request. The finalizer keeps a finished Job, past its TTL, until its reply is sent.
FINALIZER = "mstc.io/reply-pending"
REPLY_TO_ANNOTATION = "mstc.io/reply-to"
CORRELATION_ID_ANNOTATION = "mstc.io/correlation-id"
OUTPUT_BUCKET_ANNOTATION = "mstc.io/output-bucket"
PREFIX_ANNOTATION = "mstc.io/prefix"
# Who is finishing the Job (a worker's holder id) and since when. Every Job starts with an
# empty holder, so that claiming is a test-and-set on this one annotation (see kube.claim).
CLAIMED_BY_ANNOTATION = "mstc.io/claimed-by"
CLAIMED_AT_ANNOTATION = "mstc.io/claimed-at"
# Present ("true") only on Jobs whose client asked for progress messages.
PROGRESS_ANNOTATION = "mstc.io/progress"
# What the Job's lifecycle events say of its request (requested name, image, labels, as
# JSON, see events.facts_to_annotation), so that any worker can say them; and, once the final
# event is confirmed (written before the Job is let go), that it went out: a Job finished
# again after a crash is answered without a second final event.
EVENT_FACTS_ANNOTATION = "mstc.io/event-facts"
FINAL_EVENT_ANNOTATION = "mstc.io/final-event"
FINAL_EVENT_SENT = "sent"
# Set by whichever replica received a cancel (see `cancel`): that cancel was asked, when and by
# whom. The process that finishes the Job (its watch sees the change; a restarted or adopting
# worker sees it when it lists) stops the Job and answers its request `cancelled`.
CANCEL_AT_ANNOTATION = "mstc.io/cancel-requested-at"
CANCEL_BY_ANNOTATION = "mstc.io/cancel-requested-by"
CANCEL_REASON_ANNOTATION = "mstc.io/cancel-reason"
REPLY_ANNOTATIONS = (
    REQUEST_ID_ANNOTATION,
    REPLY_TO_ANNOTATION,
    CORRELATION_ID_ANNOTATION,
    OUTPUT_BUCKET_ANNOTATION,
    PREFIX_ANNOTATION,
)
# Key names inside the Secret the chart creates, not credentials.
MINIO_SECRET_USER_KEY = "rootUser"  # noqa: S105
MINIO_SECRET_PASSWORD_KEY = "rootPassword"  # noqa: S105
# Key names inside the Secret the worker makes for each Job (its temporary MinIO credentials).
JOB_ACCESS_KEY = "accessKey"
JOB_SECRET_KEY = "secretKey"  # noqa: S105
JOB_SESSION_TOKEN = "sessionToken"  # noqa: S105
# The pod's AMQP URL with its Job's own RabbitMQ login, for a Job with a task queue.
JOB_TASKS_URL = "tasksUrl"
# The task queue a Job's pods share (absent: none); tells the worker the Job has a RabbitMQ user.
TASK_QUEUE_ANNOTATION = "mstc.io/task-queue"
