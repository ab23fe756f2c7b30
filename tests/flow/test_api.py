"""The flow's HTTP API over real HTTP (uvicorn on 127.0.0.1), the engine an in-memory fake.

What is checked: every path with its status and body; the token rules on every protected
path (none, wrong, read, admin); the error mapping (404, 400 naming the parameter, 409, 503
with Retry-After, JSON bodies for unknown paths and methods); the listing's parameters as the
history receives them, and its pages; the open probes and the request counter; the OpenAPI
document; `serve` on port 0 and its stop event.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import urllib3
from prometheus_client import CollectorRegistry

from mstc_flow.api import create_app, serve
from mstc_flow.errors import ConfigError, TransientError
from tests.flow.api_support import (
    ADMIN_TOKEN,
    PIPELINE_ID,
    READ_TOKEN,
    FakePorts,
    api_settings,
    running_api,
)

A = "a" * 64
READS = [
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/sort-1"),
    ("GET", f"/api/v1/jobs/{A}/events"),
    ("GET", "/api/v1/jobs/sort-1/log"),
    ("GET", "/api/v1/catalog"),
    ("GET", "/api/v1/parked"),
    ("GET", "/api/v1/replicas"),
    ("GET", "/api/v1/flags"),
    ("GET", "/api/v1/queue"),
    ("GET", "/api/v1/pipelines"),
    ("GET", f"/api/v1/pipelines/{PIPELINE_ID}"),
]
WRITES = [
    ("POST", "/api/v1/jobs/sort-2/retry"),
    ("POST", "/api/v1/jobs/render-1/cancel"),
    ("POST", "/api/v1/catalog/ingest/fire"),
    ("POST", "/api/v1/queue/purge"),
    ("POST", "/api/v1/pipelines"),
    ("POST", f"/api/v1/pipelines/{PIPELINE_ID}/retry"),
    ("POST", f"/api/v1/pipelines/{PIPELINE_ID}/cancel"),
]
OPEN = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"]
_http = urllib3.PoolManager(retries=False, timeout=10)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FakePorts]]:
    ports = FakePorts()
    with running_api(ports) as url:
        yield url, ports


@pytest.fixture
def ports(served: tuple[str, FakePorts]) -> FakePorts:
    served[1].reset()
    return served[1]


@pytest.fixture
def url(served: tuple[str, FakePorts], ports: FakePorts) -> str:
    return served[0]


def call(
    url: str, method: str, path: str, token: str | None = ADMIN_TOKEN, body: bytes | None = None,
    scheme: str = "Bearer",
) -> urllib3.BaseHTTPResponse:  # fmt: skip
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return _http.request(method, url + path, headers=headers, body=body)


def as_json(response: urllib3.BaseHTTPResponse) -> Any:
    assert response.headers["Content-Type"] == "application/json", response.data
    return json.loads(response.data)


# --- every path ---------------------------------------------------------------------------


def test_jobs_list_gives_the_records_and_the_next_cursor(url: str) -> None:
    body = as_json(call(url, "GET", "/api/v1/jobs"))
    assert [job["jobName"] for job in body["items"]] == [
        "sort-1", "sort-2", "render-1", "render-2", None,
    ]  # fmt: skip
    assert body["items"][0]["requestId"] == A
    assert body["items"][0]["labels"] == {"team": "x"}
    assert body["items"][0]["acceptedAt"] == "2026-11-30T12:00:00+00:00"
    assert body["nextCursor"] is None


def test_a_job_is_found_by_made_name_or_request_id_with_its_firing(url: str) -> None:
    by_name = as_json(call(url, "GET", "/api/v1/jobs/sort-1"))
    by_id = as_json(call(url, "GET", f"/api/v1/jobs/{A}"))
    assert by_name == by_id
    assert by_name["state"] == "succeeded"
    assert by_name["firing"] == {"entry": "ingest", "kind": "trigger", "retryOf": None}
    assert as_json(call(url, "GET", "/api/v1/jobs/sort-2"))["firing"] is None


def test_events_are_those_of_the_jobs_request(url: str) -> None:
    body = as_json(call(url, "GET", "/api/v1/jobs/sort-1/events"))
    assert [event["eventId"] for event in body["items"]] == [f"{A}:accepted", f"{A}:succeeded"]


def test_the_log_is_plain_text_byte_for_byte(url: str) -> None:
    response = call(url, "GET", "/api/v1/jobs/sort-2/log")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.data == b"exit 1\n\xff raw byte\n"


def test_retry_is_accepted_and_names_the_first_run(url: str, ports: FakePorts) -> None:
    response = call(url, "POST", "/api/v1/jobs/sort-2/retry")
    assert response.status == 202
    assert as_json(response) == {"firingId": "f" * 32, "retryOf": "b" * 64}
    assert ports.retried == ["sort-2"]


def test_cancel_answers_the_workers_answer(url: str, ports: FakePorts) -> None:
    response = call(url, "POST", "/api/v1/jobs/render-1/cancel")
    assert response.status == 200
    assert as_json(response) == {"status": "cancelling", "message": "Cancelling render-1."}
    assert ports.cancelled == ["render-1"]


@pytest.mark.parametrize("payload", [b"", b'{"file": "x.csv"}', b"\x00\xff not utf-8"])
def test_fire_passes_the_body_as_the_payload_verbatim(
    url: str, ports: FakePorts, payload: bytes
) -> None:
    response = call(url, "POST", "/api/v1/catalog/ingest/fire", body=payload)
    assert response.status == 202
    assert as_json(response) == {"firingId": "1" * 32}
    assert ports.fired == [("ingest", payload)]


def test_catalog_parked_and_replicas(url: str) -> None:
    catalog = as_json(call(url, "GET", "/api/v1/catalog"))
    assert [entry["name"] for entry in catalog["entries"]] == ["ingest", "process"]
    assert catalog["digest"] == "0" * 64
    parked = as_json(call(url, "GET", "/api/v1/parked"))
    assert parked["items"][0]["lastError"] == "broker down"
    replicas = as_json(call(url, "GET", "/api/v1/replicas"))["items"]
    assert [(r["replica"], r["stopping"], r["inFlight"]) for r in replicas] == [
        ("worker-0", False, 1), ("worker-1", True, 0),
    ]  # fmt: skip


def test_flags_are_listed_and_each_job_carries_its_own(url: str) -> None:
    flags = as_json(call(url, "GET", "/api/v1/flags", token=READ_TOKEN))["items"]
    assert [(flag["kind"], flag["subject"]) for flag in flags] == [("pending", A)]
    listed = as_json(call(url, "GET", "/api/v1/jobs", token=READ_TOKEN))["items"]
    assert [[f["kind"] for f in job["flags"]] for job in listed] == [["pending"], [], [], [], []]
    assert as_json(call(url, "GET", f"/api/v1/jobs/{A}"))["flags"] == flags
    assert as_json(call(url, "GET", "/api/v1/jobs/sort-2"))["flags"] == []


def test_flagged_reaches_the_history(url: str, ports: FakePorts) -> None:
    assert call(url, "GET", "/api/v1/jobs?flagged=true", token=READ_TOKEN).status == 200
    assert ports.queries[-1].flagged
    assert call(url, "GET", "/api/v1/jobs", token=READ_TOKEN).status == 200
    assert not ports.queries[-1].flagged


# --- tokens ---------------------------------------------------------------------------------


def _refused(response: urllib3.BaseHTTPResponse, status: int) -> None:
    assert response.status == status, response.data
    assert as_json(response)["error"]


@pytest.mark.parametrize(("method", "path"), READS + WRITES)
@pytest.mark.parametrize(
    ("token", "scheme"),
    [(None, "Bearer"), ("wrong-token-0123456789", "Bearer"), (ADMIN_TOKEN[:-1], "Bearer"),
     (ADMIN_TOKEN, "Basic"), ("", "Bearer")],
    ids=["none", "wrong", "admin-prefix", "basic-scheme", "empty"],
)  # fmt: skip
def test_no_token_or_a_wrong_one_is_401_with_the_bearer_challenge(
    url: str, ports: FakePorts, method: str, path: str, token: str | None, scheme: str
) -> None:
    response = call(url, method, path, token=token, scheme=scheme)
    _refused(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (ports.fired, ports.retried, ports.cancelled, ports.purges) == ([], [], [], 0)


@pytest.mark.parametrize(("method", "path"), READS)
def test_the_read_token_reads(url: str, method: str, path: str) -> None:
    assert call(url, method, path, token=READ_TOKEN).status == 200


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_the_read_token_may_not_write(url: str, ports: FakePorts, method: str, path: str) -> None:
    _refused(call(url, method, path, token=READ_TOKEN), 403)
    assert (ports.fired, ports.retried, ports.cancelled, ports.purges) == ([], [], [], 0)


@pytest.mark.parametrize(("method", "path"), READS + WRITES)
def test_the_admin_token_reads_and_writes(url: str, method: str, path: str) -> None:
    assert call(url, method, path, token=ADMIN_TOKEN).status in (200, 201, 202)


def test_without_a_read_token_set_only_the_admin_token_reads() -> None:
    with running_api(FakePorts(), api_settings(read_token=None)) as url:
        _refused(call(url, "GET", "/api/v1/jobs", token=READ_TOKEN), 401)
        _refused(call(url, "GET", "/api/v1/jobs", token="x"), 401)
        assert call(url, "GET", "/api/v1/jobs", token=ADMIN_TOKEN).status == 200


@pytest.mark.parametrize("path", OPEN)
def test_probes_metrics_and_the_openapi_document_need_no_token(url: str, path: str) -> None:
    assert call(url, "GET", path, token=None).status == 200


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "sentence"),
    [("GET", "/api/v1/jobs/nope", "No job 'nope'"),
     ("GET", "/api/v1/jobs/nope/events", "No job 'nope'"),
     ("GET", "/api/v1/jobs/render-1/log", "No log is stored for render-1"),
     ("POST", "/api/v1/jobs/nope/retry", "No job 'nope'"),
     ("POST", "/api/v1/jobs/nope/cancel", "No job 'nope'"),
     ("POST", "/api/v1/catalog/nope/fire", "no entry 'nope'")],
)  # fmt: skip
def test_not_found_is_404_with_the_sentence(
    url: str, method: str, path: str, sentence: str
) -> None:
    response = call(url, method, path)
    _refused(response, 404)
    assert sentence in as_json(response)["error"]


def test_a_permanent_refusal_is_409(url: str) -> None:
    response = call(url, "POST", "/api/v1/jobs/render-1/retry")
    _refused(response, 409)
    assert as_json(response)["error"] == "render-1 is still running; retry it once it has ended."


def test_a_transient_failure_is_503_with_retry_after(url: str, ports: FakePorts) -> None:
    ports.fail_next = TransientError("The store is unreachable: connection refused.")
    response = call(url, "GET", "/api/v1/jobs")
    _refused(response, 503)
    assert response.headers["Retry-After"] == "5"
    assert as_json(response)["error"] == "The store is unreachable: connection refused."


def test_a_bug_is_500_telling_nothing_of_itself(url: str, ports: FakePorts) -> None:
    ports.fail_next = RuntimeError("secret detail")
    response = call(url, "POST", "/api/v1/catalog/ingest/fire", body=b"x")
    _refused(response, 500)
    assert "secret" not in response.data.decode()
    assert call(url, "GET", "/api/v1/jobs").status == 200  # and the server still serves


def test_unknown_paths_and_methods_answer_json(url: str) -> None:
    _refused(call(url, "GET", "/api/v1/nothing"), 404)
    _refused(call(url, "DELETE", "/api/v1/jobs/sort-1"), 405)
    assert call(url, "GET", "/docs", token=None).status == 404  # no docs UI


# --- the listing's parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "'limit'"), ("limit=501", "'limit'"), ("limit=ten", "'limit'"),
     ("state=done", "'state'"), ("since=yesterday", "'since'"), ("until=2026-13-01", "'until'"),
     ("label=team", "'label'"), ("label==x", "'label'"),
     ("since=2026-11-30T12:00:00Z&until=2026-11-30T11:00:00Z", "'until'"),
     ("cursor=forged", "'cursor'")],
)  # fmt: skip
def test_a_bad_parameter_is_400_naming_it(url: str, query: str, named: str) -> None:
    response = call(url, "GET", f"/api/v1/jobs?{query}")
    _refused(response, 400)
    assert f"query parameter {named}" in as_json(response)["error"]


def test_the_parameters_reach_the_history_as_a_job_query(url: str, ports: FakePorts) -> None:
    query = ("state=failed&name=sort&label=team%3Dx&image=busybox%3A1&since=2026-11-30T10:00:00"
             "&until=2026-11-30T13:00:00%2B01:00&limit=7")  # fmt: skip
    assert call(url, "GET", f"/api/v1/jobs?{query}", token=READ_TOKEN).status == 200
    asked = ports.queries[-1]
    assert (asked.state, asked.name, asked.label, asked.image, asked.limit, asked.cursor) == (
        "failed", "sort", "team=x", "busybox:1", 7, None,
    )  # fmt: skip
    assert asked.since == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # no zone: UTC
    assert asked.until == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_pages_follow_the_cursor(url: str) -> None:
    first = as_json(call(url, "GET", "/api/v1/jobs?limit=3"))
    assert [job["jobName"] for job in first["items"]] == ["sort-1", "sort-2", "render-1"]
    assert first["nextCursor"] == "p3"
    second = as_json(call(url, "GET", f"/api/v1/jobs?limit=3&cursor={first['nextCursor']}"))
    assert [job["jobName"] for job in second["items"]] == ["render-2", None]
    assert second["nextCursor"] is None


# --- probes, metrics, OpenAPI, serve -----------------------------------------------------------


def test_readyz_follows_the_ports(url: str, ports: FakePorts) -> None:
    assert as_json(call(url, "GET", "/readyz", token=None)) == {"status": "ready"}
    ports.is_ready = False
    _refused(call(url, "GET", "/readyz", token=None), 503)
    ports.is_ready = True
    ports.fail_next = TransientError("The broker is unreachable.")
    response = call(url, "GET", "/readyz", token=None)
    _refused(response, 503)
    assert "The broker is unreachable." in as_json(response)["error"]
    assert as_json(call(url, "GET", "/healthz", token=None)) == {"status": "alive"}


def test_metrics_count_requests_by_route_template_and_status(url: str) -> None:
    def count(route: str, method: str, status: int) -> float:
        text = call(url, "GET", "/metrics", token=None).data.decode()
        series = (f'mstc_flow_api_requests_total{{method="{method}",'
                  f'route="{route}",status="{status}"}} ')  # fmt: skip
        lines = [line for line in text.splitlines() if line.startswith(series)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = count("/api/v1/jobs/{key}", "GET", 404), count("/api/v1/jobs/{key}/retry", "POST", 403)
    call(url, "GET", "/api/v1/jobs/nope-1")
    call(url, "GET", "/api/v1/jobs/nope-2")
    call(url, "POST", "/api/v1/jobs/sort-2/retry", token=READ_TOKEN)
    after = count("/api/v1/jobs/{key}", "GET", 404), count("/api/v1/jobs/{key}/retry", "POST", 403)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_openapi_document_lists_every_path_and_its_security(url: str) -> None:
    document = as_json(call(url, "GET", "/api/v1/openapi.json", token=None))
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "mstc-flow"
    operations = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item}  # fmt: skip
    documented = {(m, p.replace("sort-1", "{key}").replace("sort-2", "{key}")
                   .replace("render-1", "{key}").replace(A, "{key}").replace("ingest", "{entry}")
                   .replace(PIPELINE_ID, "{pipeline_id}"))
                  for m, p in READS + WRITES} | {("GET", p) for p in OPEN[:3]}  # fmt: skip
    assert operations == documented
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path in READS + WRITES:
        key = next(p for m, p in documented if m == method and path.endswith(p.rsplit("}", 1)[-1]))
        operation = document["paths"][key][method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}], key
        assert "401" in operation["responses"], key
        assert ("403" in operation["responses"]) == (method == "POST"), key
    for ref in _refs(document):
        _, *parts = ref.split("/")
        node = document
        for part in parts:
            node = node[part]  # a dangling $ref raises KeyError here


def test_serve_reports_the_bound_port_and_stops_on_its_event() -> None:
    settings = api_settings()
    stop = threading.Event()
    server = serve(create_app(FakePorts(), settings, CollectorRegistry()), settings, stop)
    assert server.port > 0
    assert call(f"http://127.0.0.1:{server.port}", "GET", "/healthz").status == 200
    stop.set()
    assert server.join(10)
    with pytest.raises(urllib3.exceptions.NewConnectionError):
        _http.request("GET", f"http://127.0.0.1:{server.port}/healthz")


def test_serve_names_the_setting_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        settings = api_settings().model_copy(update={"http_port": taken.getsockname()[1]})
        app = create_app(FakePorts(), settings, CollectorRegistry())
        with pytest.raises(ConfigError, match="MSTC_FLOW_HTTP_PORT"):
            serve(app, settings, threading.Event())
