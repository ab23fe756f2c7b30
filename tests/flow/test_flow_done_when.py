"""Issue 17's "Done when", against the real stack, with `mstc-flow` as its users run it.

Every flow here is the installed `mstc-flow` script with its settings from the environment
(tests/flow/flow_process.py): its catalog comes from where MSTC_FLOW_CATALOG says (an object
in the stack's MinIO, a YAML file), its Jobs are made by a real worker on the KWOK cluster,
its API is read over HTTP and with the real `mstc` command. Each test has its own namespace,
work queue, bucket, inbox, reply queue and store. Waits watch Jobs; where nothing can be
awaited (the API), it is asked every 0.2 s.

This file: seed 000's CSV and its chain, MQTT triggers from a YAML file, catalog edits in S3
(and the refresh topic), and history that outlives the Job. The rest of the list (retry and
tokens, a flow killed mid-chain, two replicas on PostgreSQL) is in
tests/flow/test_flow_done_when_ops.py.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from minio import Minio

from mstc_flow.recorder import purge_expired
from mstc_flow.settings import load_settings
from mstc_flow.store.db import Database
from mstc_flow.store.history import History
from tests.flow.flow_process import (  # noqa: F401  (fixtures, found by pytest by name)
    READ_TOKEN,
    MakeRealFlow,
    RealFlow,
    flow_queues,
    make_real_flow,
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
from tests.support.kube import job_condition, wait_gone, watch_until
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

# Seed 000's "processing job" example, byte for byte: header, init-job, processing-job.
SEED_CSV = (Path(__file__).parents[1] / "client" / "catalogs" / "seed_jobs.csv").read_bytes()
COMPLETE_TOPIC = "services/mqtt_job_listener/job_complete/init-job"
KEEP_JOBS = {"MSTC_JOB_TTL_SECONDS": "600"}  # the Jobs stay to be looked at and counted


def put_object(minio: Minio, bucket: str, name: str, data: bytes) -> None:  # noqa: F811
    minio.put_object(bucket, name, io.BytesIO(data), len(data))


def yaml_entry(name: str, trigger: str, bucket: str, **extra: str) -> str:  # noqa: F811
    """One YAML catalog entry, three lines (plus one per extra key), at a known place."""
    lines = [f"  - name: {name}", f"    trigger: {trigger}",
             f"    request: {{image: 'example.invalid/job:1', inputBucket: {bucket}, "
             "prefix: run-1}"]  # fmt: skip
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def yaml_catalog(*entries: str) -> str:
    return "entries:\n" + "".join(entries)


def entry_names(flow: RealFlow) -> list[str]:
    status, catalog = flow.get("/api/v1/catalog", token=READ_TOKEN)
    assert status == 200, catalog
    return [entry["name"] for entry in catalog["entries"]]


def catalog_with(flow: RealFlow, names: list[str], timeout: float = 30) -> dict[str, Any]:
    answer: dict[str, Any] = flow.poll(
        "/api/v1/catalog", lambda c: [e["name"] for e in c["entries"]] == names, timeout
    )
    return answer


def test_seed_000_csv_in_s3_runs_its_chain_with_the_init_jobs_payload_and_parallelism(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    minio: Minio, bucket: str, api_client: k8s.ApiClient, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    put_object(minio, bucket, "services/jobs.csv", SEED_CSV)
    worker_env = {"MSTC_EVENTS_JOB_LISTENER_TOPIC": "true", "MSTC_MAX_PARALLELISM": "50",
                  **KEEP_JOBS}  # fmt: skip
    # The CSV names no bucket: the flow gives its requests MSTC_BUCKET.
    flow = start_with_worker(make_worker, make_real_flow, worker_env,
                             MSTC_FLOW_CATALOG=f"s3://{bucket}/services/jobs.csv",
                             MSTC_BUCKET=bucket)  # fmt: skip
    catalog = flow.get("/api/v1/catalog", token=READ_TOKEN)[1]
    assert catalog["error"] is None
    assert [(e["name"], e["trigger"], e["line"]) for e in catalog["entries"]] == [
        ("init-job", "experiments/init-job", 2), ("processing-job", COMPLETE_TOPIC, 3),
    ]  # fmt: skip

    publish_mqtt(stack, "experiments/init-job", b'{"queue": "unique-queue-name"}')
    init = wait_job(api_client, namespace, "init-job")
    assert job_env(init)["MSTC_TRIGGER_PAYLOAD"] == '{"queue": "unique-queue-name"}'
    assert init.spec.parallelism == 1
    processing = wait_job(api_client, namespace, "processing-job")

    event = json.loads(job_env(processing)["MSTC_TRIGGER_PAYLOAD"])
    assert (event["event"], event["requestedName"]) == ("succeeded", "init-job")
    assert event["jobName"] == init.metadata.name
    assert job_env(processing)["MSTC_TRIGGER_TOPIC"] == COMPLETE_TOPIC
    assert (processing.spec.completions, processing.spec.parallelism) == (50, 50)
    container = processing.spec.template.spec.containers[0]
    assert container.image == "braingeneers/job-processing:latest"
    assert container.resources.requests == {"cpu": "1", "memory": "1Gi",
                                            "ephemeral-storage": "10Gi"}  # fmt: skip
    assert container.resources.limits == {"cpu": "2", "memory": "2Gi",
                                          "ephemeral-storage": "20Gi"}  # fmt: skip
    # The KWOK node has room for all 50 pods (stack/kwok/node.yaml): the chain runs to its end.
    done = watch_until(
        k8s.BatchV1Api(api_client).list_namespaced_job,
        lambda _type, job: job_condition(job, "Complete") is not None,
        timeout=180, namespace=namespace,
        field_selector=f"metadata.name={processing.metadata.name}",
    )  # fmt: skip
    assert done.status.succeeded == 50
    assert len(jobs_of(api_client, namespace, "init-job")) == 1
    assert len(jobs_of(api_client, namespace, "processing-job")) == 1


def test_an_mqtt_publish_fires_every_entry_on_its_topic_from_a_yaml_file(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    a, b = name(), name()
    topic = f"experiments/{a}/start"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml_catalog(yaml_entry(a, topic, bucket),
                                    yaml_entry(b, "experiments/+/start", bucket)))  # fmt: skip
    start_with_worker(make_worker, make_real_flow, KEEP_JOBS,
                      MSTC_FLOW_CATALOG=f"file:{catalog}")  # fmt: skip
    publish_mqtt(stack, topic, b'{"sample": 7}')
    for entry in (a, b):
        env = job_env(wait_job(api_client, namespace, entry))
        assert env["MSTC_TRIGGER_PAYLOAD"] == '{"sample": 7}'
        assert env["MSTC_TRIGGER_TOPIC"] == topic


def test_a_catalog_edit_in_s3_takes_effect_without_restart_and_a_broken_one_is_refused(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    minio: Minio, bucket: str, api_client: k8s.ApiClient, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    first, second, third = name(), name(), name()
    key = "flows/catalog.yaml"
    put_object(minio, bucket, key, yaml_catalog(yaml_entry(first, f"lab/{first}", bucket)).encode())
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS,
                             MSTC_FLOW_CATALOG=f"s3://{bucket}/{key}",
                             MSTC_FLOW_CATALOG_POLL_SECONDS="1")  # fmt: skip
    store = flow.env["MSTC_FLOW_STORE_URL"]
    publish_mqtt(stack, f"lab/{first}", b"v1")
    wait_job(api_client, namespace, first)

    # The edit: `second` added, `first` dropped; the same process takes it at its next poll.
    edited = yaml_catalog(yaml_entry(second, f"lab/{second}", bucket))
    put_object(minio, bucket, key, edited.encode())
    assert catalog_with(flow, [second])["error"] is None
    publish_mqtt(stack, f"lab/{first}", b"after the edit")
    publish_mqtt(stack, f"lab/{second}", b"after the edit")
    wait_job(api_client, namespace, second, MSTC_TRIGGER_PAYLOAD="after the edit")
    # `first`'s message came before `second`'s into one queue: had it fired, it would show.
    assert len(firings_of(store, first)) == 1
    assert len(jobs_of(api_client, namespace, first)) == 1

    # A broken edit (line 8: a concurrency that does not exist) is refused whole.
    bad = yaml_entry(third, f"lab/{third}", bucket, concurrency="often")
    broken = yaml_catalog(yaml_entry(second, f"lab/{second}", bucket), bad)
    put_object(minio, bucket, key, broken.encode())
    refused = flow.poll("/api/v1/catalog", lambda c: c["error"] is not None, timeout=30)
    assert f"s3://{bucket}/{key}, line 8: concurrency: 'often'" in refused["error"]
    assert [entry["name"] for entry in refused["entries"]] == [second]  # the last good one
    publish_mqtt(stack, f"lab/{third}", b"after the broken edit")
    publish_mqtt(stack, f"lab/{second}", b"after the broken edit")
    wait_job(api_client, namespace, second, MSTC_TRIGGER_PAYLOAD="after the broken edit")
    assert firings_of(store, third) == []


def test_the_refresh_topic_reloads_the_catalog_at_once(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    minio: Minio, bucket: str, api_client: k8s.ApiClient, namespace: str,  # noqa: F811
) -> None:  # fmt: skip
    """An hour between polls: only the refresh message can make the edit active now."""
    first, second = name(), name()
    key = "flows/catalog.yaml"
    put_object(minio, bucket, key, yaml_catalog(yaml_entry(first, f"lab/{first}", bucket)).encode())
    flow = start_with_worker(make_worker, make_real_flow, KEEP_JOBS,
                             MSTC_FLOW_CATALOG=f"s3://{bucket}/{key}",
                             MSTC_FLOW_CATALOG_POLL_SECONDS="3600")  # fmt: skip
    edited = yaml_catalog(yaml_entry(first, f"lab/{first}", bucket),
                          yaml_entry(second, f"lab/{second}", bucket))  # fmt: skip
    put_object(minio, bucket, key, edited.encode())
    publish_mqtt(stack, "services/mqtt_job_listener/REFRESH", b"jobs.csv changed")
    catalog_with(flow, [first, second], timeout=20)
    publish_mqtt(stack, f"lab/{second}", b"new entry")
    wait_job(api_client, namespace, second, MSTC_TRIGGER_PAYLOAD="new entry")


def test_history_answers_for_a_job_after_its_ttl_deleted_it(
    make_worker: MakeWorker, make_real_flow: MakeRealFlow, stack: StackInfo,  # noqa: F811
    bucket: str, api_client: k8s.ApiClient, namespace: str, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    """The Job goes 1 s after it ends (the worker's MSTC_JOB_TTL_SECONDS); its history stays.

    An hour cannot be waited here, and need not be: nothing in the history expires before
    MSTC_FLOW_HISTORY_RETENTION_DAYS (30 days by default), the one rule that deletes it. So
    the test asks after the Job is gone, then runs the retention purge as it would run an
    hour later with the default setting (nothing goes), and as it would after the retention
    (the job goes: the purge is what bounds the history, not the Job's TTL).
    """
    a = name()
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml_catalog(yaml_entry(a, f"lab/{a}", bucket)))
    flow = start_with_worker(make_worker, make_real_flow, {"MSTC_JOB_TTL_SECONDS": "1"},
                             MSTC_FLOW_CATALOG=f"file:{catalog}")  # fmt: skip
    publish_mqtt(stack, f"lab/{a}", b"keep me")
    job_name = wait_job(api_client, namespace, a).metadata.name
    wait_gone(k8s.BatchV1Api(api_client).list_namespaced_job, timeout=120, namespace=namespace,
              field_selector=f"metadata.name={job_name}")  # fmt: skip

    flow.poll(f"/api/v1/jobs/{job_name}", lambda job: job["state"] == "succeeded")
    shown = flow.mstc("jobs", "show", job_name, "--json", token=READ_TOKEN)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert (job["requestedName"], job["jobName"], job["state"]) == (a, job_name, "succeeded")
    assert job["exitCode"] == 0
    assert all(job[moment] for moment in ("acceptedAt", "runningAt", "finishedAt"))
    assert (job["logBucket"], bool(job["logObject"])) == (bucket, True)
    assert job["request"]["env"]["MSTC_TRIGGER_PAYLOAD"] == "keep me"
    assert [event["event"] for event in job["events"]][-1] == "succeeded"
    status, listed = flow.get(f"/api/v1/jobs?name={a}", token=READ_TOKEN)
    assert status == 200
    assert [item["jobName"] for item in listed["items"]] == [job_name]
    logs = flow.mstc("jobs", "logs", job_name, token=READ_TOKEN)
    assert logs.returncode == 0, logs.stderr
    assert "KWOK pods have no real containers" in logs.stdout

    retention = load_settings(flow.env).history_retention_days
    assert retention == 30  # the default: the flow above was given none
    database = Database.open(flow.env["MSTC_FLOW_STORE_URL"], migrate=False)
    try:
        history = History(database)
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        assert purge_expired(history, retention, in_an_hour) == 0
        assert flow.get(f"/api/v1/jobs/{job_name}", token=READ_TOKEN)[0] == 200
        after_retention = datetime.now(UTC) + timedelta(days=retention, hours=1)
        assert purge_expired(history, retention, after_retention) == 1
        assert flow.get(f"/api/v1/jobs/{job_name}", token=READ_TOKEN)[0] == 404
    finally:
        database.close()
