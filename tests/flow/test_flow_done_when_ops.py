"""Issue 17's "Done when", second half: what operators do and what goes wrong.

`mstc jobs retry` runs a failed Job again and links the two, and only the admin token may
(retry and cancel); `mstc-flow` killed mid-chain neither loses nor doubles a step; two
replicas on PostgreSQL fire each trigger once. Same harness as tests/flow/test_flow_done_when.py:
the installed `mstc-flow` script with its settings from the environment, a real worker on the
KWOK cluster, the real `mstc` command. The exact ack window (killed after committing a
message's firings, before acking it, with one chained entry) is also pinned by a test-only
hook in tests/flow/test_engine_stack.py; here the kill needs no hook in the service.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kubernetes import client as k8s

from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    inbox_consumers,
    make_real_flow,
    pg_store,
    start_with_worker,
)
from tests.flow.test_engine_stack import (
    firings_of,
    job_env,
    jobs_of,
    name,
    publish_mqtt,
    wait_job,
)
from tests.support.events import MqttEvents
from tests.support.kube import EXIT_CODE, RUN_FOR, job_condition, watch_until
from tests.support.stack import StackInfo
from tests.worker.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    MakeWorker,
    bucket,
    make_worker,
    minio,
    minio_secret,
    work_queue,
)

pytestmark = pytest.mark.stack

KEEP_JOBS = {"MSTC_JOB_TTL_SECONDS": "600"}  # the Jobs stay to be counted


def write_catalog(path: Path, bucket: str, entries: list[tuple[str, str, dict[str, str]]]) -> str:  # noqa: F811
    """A YAML catalog of (name, trigger, pod annotations) entries; its MSTC_FLOW_CATALOG."""
    path.write_text(yaml.safe_dump({"entries": [
        {"name": entry, "trigger": trigger,
         "request": {"image": "example.invalid/job:1", "inputBucket": bucket, "prefix": "run-1",
                     **({"annotations": annotations} if annotations else {})}}
        for entry, trigger, annotations in entries
    ]}))  # fmt: skip
    return f"file:{path}"


def test_retry_runs_a_failed_job_again_linked_to_it_and_only_the_admin_token_may(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, bucket: str,  # noqa: F811
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    f = name()
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(f, f"lab/{f}", {EXIT_CODE: "3"})])
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS, MSTC_FLOW_CATALOG=catalog)
    fired = flow.mstc("catalog", "fire", f, "--payload", "by hand", "--json")
    assert fired.returncode == 0, fired.stderr
    first = wait_job(api_client, namespace, f)
    failed = flow.poll(f"/api/v1/jobs/{first.metadata.name}", lambda j: j["state"] == "failed")
    assert failed["exitCode"] == 3
    key = failed["requestId"]

    for action in ("retry", "cancel"):
        read_only = flow.mstc("jobs", action, key, token=READ_TOKEN)
        assert read_only.returncode == 10, read_only.stderr
        status, answer = flow.post(f"/api/v1/jobs/{key}/{action}", token=None)
        assert status == 401, answer
        assert flow.post(f"/api/v1/jobs/{key}/{action}", token=READ_TOKEN)[0] == 403
    assert flow.mstc("jobs", "retry", key, token="not-the-token-0123456789").returncode == 10
    no_token = flow.mstc("jobs", "retry", key, token=None)  # refused before any call
    assert no_token.returncode != 0
    assert "MSTC_FLOW_TOKEN is not set" in no_token.stderr
    assert flow.get(f"/api/v1/jobs/{key}", token=None)[0] == 401
    shown = flow.mstc("jobs", "show", key, "--json", token=READ_TOKEN)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "failed"
    listed = flow.mstc("jobs", "ls", "--name", f, "--json", token=READ_TOKEN)
    assert [job["requestId"] for job in json.loads(listed.stdout)["items"]] == [key]
    assert len(firings_of(flow.env["MSTC_FLOW_STORE_URL"], f)) == 1  # nothing refused went on

    retried = flow.mstc("jobs", "retry", key, "--json")
    assert retried.returncode == 0, retried.stderr
    answer = json.loads(retried.stdout)
    assert answer["retryOf"] == key
    second = watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _type, job: job.metadata.name != first.metadata.name, timeout=120,
        namespace=namespace,
    )  # fmt: skip
    assert job_env(second) == job_env(first)  # the same request, env and all
    again = flow.poll(f"/api/v1/jobs/{second.metadata.name}", lambda j: j["state"] == "failed")
    shown = flow.mstc("jobs", "show", again["requestId"], "--json", token=READ_TOKEN)
    new = json.loads(shown.stdout)
    assert new["firing"]["retryOf"] == key
    assert new["firing"]["kind"] == "retry"
    assert new["correlationId"] == f"flow:{answer['firingId']}"
    assert new["request"] == failed["request"]
    # The admin token passes: the worker answers (the first Job ended already).
    assert flow.mstc("jobs", "cancel", key).returncode == 9


def test_a_flow_killed_while_a_step_finishes_runs_the_next_step_once_on_restart(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    """A's completion arrives while the flow is dead: it waits in the durable inbox."""
    a, b, marker = name(), name(), name()
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [
        (a, f"lab/{a}", {}), (b, f"mstc/job/final/succeeded/{a}", {}),
        (marker, f"lab/{marker}", {}),
    ])  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS, MSTC_FLOW_CATALOG=catalog)
    finals = MqttEvents(stack, [f"mstc/job/final/+/{a}"])
    try:
        publish_mqtt(stack, f"lab/{a}", b"step one")
        wait_job(api_client, namespace, a)
        assert flow.kill() == -9
        finals.wait_for(lambda events: len(events) == 1)  # A ended with the flow dead
    finally:
        finals.close()
    flow.start()
    wait_job(api_client, namespace, b)
    publish_mqtt(stack, f"lab/{marker}", b"behind")  # handled after everything before it
    wait_job(api_client, namespace, marker)
    store = flow.env["MSTC_FLOW_STORE_URL"]
    assert (len(firings_of(store, a)), len(firings_of(store, b))) == (1, 1)
    assert len(jobs_of(api_client, namespace, a)) == 1
    assert len(jobs_of(api_client, namespace, b)) == 1


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _hold_firing(url: str, entry: str, source_key: str) -> psycopg.Connection[Any]:
    """An open transaction holding (source_key, entry) in the firings table: the flow's own
    insert of that firing waits on it, in the middle of handling its message."""
    connection = psycopg.connect(_plain(url))
    connection.execute(
        "INSERT INTO firings (id, entry, kind, topic, source_key, payload, state, attempts, "
        "created_at, updated_at) VALUES (%s, %s, 'chain', '', %s, '', 'pending', 0, now(), now())",
        (uuid.uuid4().hex, entry, source_key),
    )
    return connection


def _wait_until(check: Any, what: str, timeout: float = 60) -> None:
    """Poll the store (nothing there can be awaited) every 0.1 s until `check()`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.1)


def _insert_waits(url: str) -> bool:
    with psycopg.connect(_plain(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO firings%'"
        ).fetchone()
    return bool(row and row[0])


def test_a_flow_killed_after_a_steps_firing_is_stored_before_the_ack_doubles_nothing(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str, tmp_path: Path,  # noqa: F811
    pg_store: str,  # noqa: F811
) -> None:  # fmt: skip
    """A's completion fires B1 and B2. The test holds B2's row in PostgreSQL, so the flow
    stops between committing B1's firing and acking the message: killed there (SIGKILL),
    restarted, it must run B1 once (not again) and B2 once (not lost)."""
    a, b1, b2, marker = name(), name(), name(), name()
    done = f"mstc/job/final/succeeded/{a}"
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [
        (a, f"lab/{a}", {RUN_FOR: "4s"}), (b1, done, {}), (b2, done, {}),
        (marker, f"lab/{marker}", {}),
    ])  # fmt: skip
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS, MSTC_FLOW_CATALOG=catalog,
                             MSTC_FLOW_STORE_URL=pg_store)  # fmt: skip
    publish_mqtt(stack, f"lab/{a}", b"step one")
    first = wait_job(api_client, namespace, a)
    request_id = flow.poll(f"/api/v1/jobs/{first.metadata.name}", lambda _job: True)["requestId"]
    held = _hold_firing(pg_store, b2, f"event:{request_id}:succeeded")
    try:
        _wait_until(lambda: len(firings_of(pg_store, b1)) == 1, "B1's firing stored")
        _wait_until(lambda: _insert_waits(pg_store), "the flow's insert of B2 waits")
        assert flow.kill() == -9
    finally:
        held.rollback()
        held.close()
    flow.start()
    for entry in (b1, b2):
        wait_job(api_client, namespace, entry)
    publish_mqtt(stack, f"lab/{marker}", b"behind")
    wait_job(api_client, namespace, marker)
    assert f"entry {b1} fired already" in flow.log_text  # the unacked message came back
    for entry in (a, b1, b2):
        assert len(firings_of(pg_store, entry)) == 1, entry
        assert len(jobs_of(api_client, namespace, entry)) == 1, entry
    completed = k8s.BatchV1Api(api_client).read_namespaced_job(first.metadata.name, namespace)
    assert job_condition(completed, "Complete") is not None


def test_two_flow_replicas_on_postgresql_fire_each_trigger_once(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str, tmp_path: Path,  # noqa: F811
    pg_store: str, flow_queues: dict[str, str],  # noqa: F811
) -> None:  # fmt: skip
    a = name()
    catalog = write_catalog(tmp_path / "catalog.yaml", bucket, [(a, f"lab/pair/{a}", {})])
    # Both replicas' scans (every second) race for the firings their inboxes record.
    env = {"MSTC_FLOW_CATALOG": catalog, "MSTC_FLOW_STORE_URL": pg_store,
           "MSTC_FLOW_PENDING_SCAN_SECONDS": "1"}  # fmt: skip
    flows = [start_with_worker(make_worker, make_real_flow, KEEP_JOBS, **env),
             make_real_flow(**env)]  # fmt: skip
    assert inbox_consumers(stack, flow_queues["MSTC_FLOW_INBOX_QUEUE"]) == 2
    count = 6
    for n in range(count):
        publish_mqtt(stack, f"lab/pair/{a}", f"trigger {n}".encode())
    for n in range(count):
        wait_job(api_client, namespace, a, MSTC_TRIGGER_PAYLOAD=f"trigger {n}")
    # Both consumed: RabbitMQ hands the inbox's messages (triggers, job events, heartbeats) to
    # the two consumers in turn, so each handled some. Which replica got the triggers is
    # RabbitMQ's choice (the events interleave), so that is not asserted.
    assert all(_inbox_messages_handled(flow) > 0 for flow in flows)
    for flow in flows:
        assert flow.stop() == 0
    firings = firings_of(pg_store, a)
    assert len(firings) == count
    assert len(jobs_of(api_client, namespace, a)) == count
    logs = [flow.log_text for flow in flows]
    for firing_id, _state in firings:
        assert sum(log.count(f"firing {firing_id} submitted") for log in logs) == 1, firing_id


def _inbox_messages_handled(flow: RealFlow) -> float:
    """The replica's own count of inbox messages handled, from its /metrics."""
    status, text = flow.get("/metrics", token=None)
    assert status == 200, text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in str(text).splitlines()
        if line.startswith("mstc_flow_inbox_messages_total{")
    )
