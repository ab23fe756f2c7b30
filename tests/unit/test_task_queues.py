"""The exact rules of task queues: names, the permission grant, the Job's user and password,
the `taskQueue` request field, the Job's env and Secret, and the settings that turn it on.

RabbitMQ enforcing the grant is shown in tests/worker/test_task_queues.py; these pin the rules.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from mstc_worker import manifest, task_queues
from mstc_worker.errors import ConfigError, RequestRejected
from mstc_worker.job_access import credentials_secret
from mstc_worker.protocol import parse_request
from tests.unit.conftest import MakeBody, MakeSettings

TASKS_ON = {
    "MSTC_TASKS_MANAGEMENT_URL": "http://rabbitmq:15672",
    "MSTC_TASKS_ADMIN_USER": "mstc-admin",
    "MSTC_TASKS_ADMIN_PASS": "admin-secret",
}


OTHER_RESOURCES = (
    "mstc.tasks.q-12",
    "mstc.tasks.q-",
    "xmstc.tasks.q-1",
    "mstc.tasksXq-1",
    "mstc.tasks.q-1.x",
    "amq.default",  # the default exchange reaches every queue
    "",
    "mstc.queue.work",
    "mstc.exchange",
)


def allowed(pattern: str, resource: str) -> bool:
    # RabbitMQ searches the pattern in the resource name (Erlang re:run): anchors decide.
    return re.search(pattern, resource) is not None


def test_the_grant_covers_exactly_the_queue_and_its_exchange() -> None:
    grant = task_queues.grant_for("q-1")
    for pattern in grant:
        assert allowed(pattern, "mstc.tasks.q-1")
        for other in OTHER_RESOURCES:
            assert not allowed(pattern, other), (pattern, other)


@pytest.mark.parametrize("name", ["a", "Q_1-b", "x" * 100, "0"])
def test_good_names(name: str) -> None:
    assert task_queues.name_problem(name) is None
    assert task_queues.queue_name(name) == f"mstc.tasks.{name}"


@pytest.mark.parametrize("name", ["", "a.b", "a*", "a#", ".*", "-a", "_a", "x" * 101, "ä", "a b"])
def test_names_that_would_widen_the_grant_are_refused(name: str) -> None:
    assert task_queues.name_problem(name) is not None


def test_the_user_names_its_job_and_namespace() -> None:
    user = task_queues.user_name("ns-1", "job-abc")
    assert user == "mstc.job.ns-1.job-abc"
    assert task_queues.job_of_user(user, "ns-1") == "job-abc"
    assert task_queues.job_of_user(user, "ns") is None
    assert task_queues.job_of_user("mstc.job.ns-1.", "ns-1") is None
    assert task_queues.job_of_user("guest", "ns-1") is None


def test_the_password_is_stable_per_job_and_needs_the_key() -> None:
    first = task_queues.user_password("key", "uid-1")
    assert first == task_queues.user_password("key", "uid-1")
    assert first != task_queues.user_password("key", "uid-2")
    assert first != task_queues.user_password("other-key", "uid-1")
    assert len(first) >= 40


def test_the_url_quotes_every_part() -> None:
    url = task_queues.tasks_url("rabbit", 5672, "/", "mstc.job.ns.j", "p/w:d@")
    assert url == "amqp://mstc.job.ns.j:p%2Fw%3Ad%40@rabbit:5672/%2F"


def test_a_task_queue_request_is_rejected_without_the_settings(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    with pytest.raises(RequestRejected, match="MSTC_TASKS_MANAGEMENT_URL") as caught:
        parse_request(make_body(taskQueue="q1"), settings=make_settings())
    assert caught.value.field == "taskQueue"


@pytest.mark.parametrize("bad", ["a.b", "*", 5, ["q"]])
def test_a_bad_task_queue_name_is_rejected(
    make_settings: MakeSettings, make_body: MakeBody, bad: object
) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_request(make_body(taskQueue=bad), settings=make_settings(**TASKS_ON))
    assert caught.value.field == "taskQueue"


def test_the_pods_task_variables_cannot_be_forged(
    make_settings: MakeSettings, make_body: MakeBody
) -> None:
    with pytest.raises(RequestRejected):
        parse_request(make_body(env={"MSTC_TASKS_URL": "amqp://x"}), settings=make_settings())


def test_the_job_of_a_task_queue_request(make_settings: MakeSettings, make_body: MakeBody) -> None:
    # Even with the shared MinIO key the Job waits, suspended, for its Secret.
    settings = make_settings(MSTC_JOB_ROOT_CREDENTIALS="true", **TASKS_ON)
    request = parse_request(make_body(taskQueue="q1"), settings=settings)
    job = manifest.build_job(request, request_id="r1", settings=settings)
    name = job["metadata"]["name"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["mstc.io/task-queue"] == "q1"
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MSTC_TASK_QUEUE"] == {"name": "MSTC_TASK_QUEUE", "value": "q1"}
    assert env["MSTC_TASKS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": f"{name}-storage", "key": "tasksUrl"}
    }


def test_no_task_queue_no_task_variables(make_settings: MakeSettings, make_body: MakeBody) -> None:
    settings = make_settings(MSTC_JOB_ROOT_CREDENTIALS="true", **TASKS_ON)
    job = manifest.build_job(parse_request(make_body(), settings=settings), request_id="r1",
                             settings=settings)  # fmt: skip
    assert "suspend" not in job["spec"]
    assert "mstc.io/task-queue" not in job["metadata"]["annotations"]
    text = json.dumps(job)
    assert "MSTC_TASK" not in text


def test_the_secret_carries_the_url_beside_or_without_the_minio_key() -> None:
    alone = credentials_secret("j", "uid", tasks_url="amqp://u:p@h:1/%2F")
    assert {k: base64.b64decode(v).decode() for k, v in alone["data"].items()} == {
        "tasksUrl": "amqp://u:p@h:1/%2F"
    }
    both = credentials_secret("j", "uid", access_key="a", secret_key="s", session_token="t",
                              tasks_url="amqp://x")  # fmt: skip
    assert set(both["data"]) == {"accessKey", "secretKey", "sessionToken", "tasksUrl"}


@pytest.mark.parametrize("missing", list(TASKS_ON))
def test_the_settings_go_together(make_settings: MakeSettings, missing: str) -> None:
    with pytest.raises(ConfigError, match="go together"):
        make_settings(**{k: v for k, v in TASKS_ON.items() if k != missing})


def test_the_settings_are_off_by_default(make_settings: MakeSettings) -> None:
    assert not make_settings().task_queues
    assert make_settings(**TASKS_ON).task_queues


def test_the_vhost_comes_from_the_workers_url(make_settings: MakeSettings) -> None:
    assert make_settings().amqp_vhost == "/"
    assert make_settings(MSTC_AMQP_URL="amqp://h:5672/team%2Fa").amqp_vhost == "team/a"
    assert make_settings(MSTC_AMQP_URL="amqp://h:5672").amqp_vhost == "/"
