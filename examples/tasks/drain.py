"""A Job's pod that drains its task queue, and records every step in the Job's output bucket.

The worker gives a Job whose request named a task queue the variables `TaskQueue.from_env`
reads (its own RabbitMQ login, limited to that queue), and every Job its MinIO variables
(MINIO_SERVICE_HOST, MINIO_SERVICE_PORT, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, AWS_SESSION_TOKEN:
its own key, which may write the output bucket under FILE_PREFIX only). Several pods of one
Job (``"parallelism": 5``) share the queue: each takes a task, works on it, marks it done, and
ends with exit code 0 once no task has come for TASKS_IDLE_SECONDS (10 by default).

A task is a JSON object with an ``id``. For each one the pod writes two empty objects to the
output bucket, named after the task and the pod (its host name): ``<prefix>/processed/<id>/<pod>``
once it has worked on the task, ``<prefix>/acked/<id>/<pod>`` once the task is marked done. What
a pod did is thus on record up to its death, readable by whoever may read the bucket, and the
pod needs no broker rights beyond its queue. A task with ``"hold": true`` is processed and then
held, never marked done, after writing ``<prefix>/holding/<id>/<pod>``: a test kills that pod
there, and RabbitMQ hands the task to another pod, which finds that record (the Job's key may
list its prefix when the input bucket is the output bucket) and does the task as any other.
"""

# ruff: noqa: T201 - a pod reports to its log, which is its standard output

from __future__ import annotations

import io
import os
import queue
import threading

from minio import Minio

from mstc_client.tasks import TaskQueue


def storage(env: dict[str, str]) -> Minio:
    return Minio(
        f"{env['MINIO_SERVICE_HOST']}:{env.get('MINIO_SERVICE_PORT') or '9000'}",
        access_key=env["MINIO_ROOT_USER"],
        secret_key=env["MINIO_ROOT_PASSWORD"],
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        secure=False,
    )


def held_before(s3: Minio, bucket: str, prefix: str) -> bool:
    return any(True for _ in s3.list_objects(bucket, prefix=prefix))


def main(env: dict[str, str]) -> None:
    s3 = storage(env)
    bucket, prefix = env["OUTPUT_BUCKET"], env.get("FILE_PREFIX", "")
    pod = env["HOSTNAME"]
    idle = float(env.get("TASKS_IDLE_SECONDS") or 10)

    def record(step: str, task_id: object) -> None:
        s3.put_object(bucket, f"{prefix}/{step}/{task_id}/{pod}", io.BytesIO(b""), 0)

    done = 0
    with TaskQueue.from_env(env) as tasks:
        while True:
            try:
                task = tasks.get(timeout=idle)
            except queue.Empty:
                break
            record("processed", task["id"])
            if task.get("hold") and not held_before(s3, bucket, f"{prefix}/holding/{task['id']}/"):
                record("holding", task["id"])
                print(f"holding task {task['id']}")
                threading.Event().wait()  # until the pod is killed
            tasks.task_done()
            record("acked", task["id"])
            done += 1
    print(f"{pod}: {done} tasks done, none left")


if __name__ == "__main__":
    main(dict(os.environ))
