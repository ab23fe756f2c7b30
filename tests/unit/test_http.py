"""The HTTP port and the metrics it serves: real requests to a server on 127.0.0.1."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message

import pytest

from mstc_worker.http import DEFAULT_MAX_BODY_BYTES, HttpServer, HttpServerError
from mstc_worker.metrics import JOB_DURATION_BUCKETS, Metrics

TOKEN = "s3cret-token-for-tests"


@dataclass
class Probe:
    """What the fake service tells the probes and does on execute."""

    live: bool = True
    ready: bool = False
    bodies: list[bytes] = field(default_factory=list)
    answer: tuple[int, str] = (200, "Job test-job-1 complete.")

    def execute(self, body: bytes) -> tuple[int, str]:
        self.bodies.append(body)
        return self.answer


@dataclass
class Response:
    status: int
    headers: Message
    text: str


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


StartServer = Callable[..., HttpServer]


@pytest.fixture
def start_server(metrics: Metrics, probe: Probe) -> Iterator[StartServer]:
    servers: list[HttpServer] = []

    def start(**overrides: object) -> HttpServer:
        options: dict[str, object] = {
            "is_live": lambda: probe.live,
            "is_ready": lambda: probe.ready,
            "execute": probe.execute,
            "token": TOKEN,
            "host": "127.0.0.1",
            **overrides,
        }
        server = HttpServer(0, metrics, **options)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> HttpServer:
    return start_server()


def call(
    server: HttpServer,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request; `token` goes in an `Authorization: Bearer` header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", data=body, method=method, headers=headers or {}
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return Response(reply.status, reply.headers, reply.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read().decode())


def sample(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels, as exposed) in metrics text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_java_hello_route(server: HttpServer) -> None:
    reply = call(server, "/mstc/worker")
    assert (reply.status, reply.text) == (200, "hello")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_metrics_lists_every_metric_at_zero_before_anything_happens(server: HttpServer) -> None:
    reply = call(server, "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for outcome in ("succeeded", "failed", "timeout", "rejected", "error"):
        assert sample(reply.text, f'mstc_requests_total{{outcome="{outcome}"}}') == 0
    for kind in ("transient", "rejected"):
        assert sample(reply.text, f'mstc_kube_api_errors_total{{kind="{kind}"}}') == 0
    for name in (
        "mstc_jobs_in_flight",
        "mstc_job_duration_seconds_count",
        "mstc_broker_reconnects_total",
        "mstc_replies_total",
        "mstc_storage_errors_total",
        "mstc_worker_process_restarts_total",
    ):
        assert sample(reply.text, name) == 0
    assert "process_resident_memory_bytes" in reply.text


def test_metrics_show_the_values_recorded(server: HttpServer, metrics: Metrics) -> None:
    metrics.request_done("succeeded", 42.0)
    metrics.request_done("succeeded", 7200.0)
    metrics.request_done("rejected", None)
    metrics.set_in_flight(3)
    metrics.broker_reconnected()
    metrics.kube_error("transient")
    metrics.kube_error("transient")
    metrics.kube_error("rejected")
    metrics.storage_error()
    metrics.reply_sent()
    metrics.worker_process_restarted()

    text = call(server, "/metrics").text
    assert sample(text, 'mstc_requests_total{outcome="succeeded"}') == 2
    assert sample(text, 'mstc_requests_total{outcome="rejected"}') == 1
    assert sample(text, 'mstc_requests_total{outcome="failed"}') == 0
    assert sample(text, "mstc_jobs_in_flight") == 3
    # Only requests that ran a Job have a duration.
    assert sample(text, "mstc_job_duration_seconds_count") == 2
    assert sample(text, "mstc_job_duration_seconds_sum") == 7242
    assert sample(text, 'mstc_job_duration_seconds_bucket{le="60.0"}') == 1
    assert sample(text, 'mstc_job_duration_seconds_bucket{le="7200.0"}') == 2
    assert sample(text, "mstc_broker_reconnects_total") == 1
    assert sample(text, 'mstc_kube_api_errors_total{kind="transient"}') == 2
    assert sample(text, 'mstc_kube_api_errors_total{kind="rejected"}') == 1
    assert sample(text, "mstc_storage_errors_total") == 1
    assert sample(text, "mstc_replies_total") == 1
    assert sample(text, "mstc_worker_process_restarts_total") == 1


def test_duration_buckets_span_a_second_to_a_day() -> None:
    assert JOB_DURATION_BUCKETS[0] == 1
    assert JOB_DURATION_BUCKETS[-1] == 24 * 3600
    assert list(JOB_DURATION_BUCKETS) == sorted(JOB_DURATION_BUCKETS)


def test_metrics_speak_openmetrics_to_prometheus(server: HttpServer, metrics: Metrics) -> None:
    metrics.reply_sent()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        text = reply.read().decode()
    assert sample(text, "mstc_replies_total") == 1
    assert text.endswith("# EOF\n")


def test_unknown_labels_are_refused_not_turned_into_new_series(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="unknown request outcome 'succeded'"):
        metrics.request_done("succeded", 1.0)
    with pytest.raises(ValueError, match="unknown Kubernetes error kind"):
        metrics.kube_error("fatal")


def test_two_metrics_objects_in_one_process_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.reply_sent()
    assert b"mstc_replies_total 1.0" in first.render()[0]
    assert b"mstc_replies_total 0.0" in second.render()[0]


def test_liveness_follows_its_callable(server: HttpServer, probe: Probe) -> None:
    assert (call(server, "/healthz").status, call(server, "/healthz").text) == (200, "ok\n")
    probe.live = False
    reply = call(server, "/healthz")
    assert (reply.status, reply.text) == (503, "not live\n")
    probe.live = True
    assert call(server, "/healthz").status == 200


def test_readiness_follows_its_callable(server: HttpServer, probe: Probe) -> None:
    reply = call(server, "/readyz")
    assert (reply.status, reply.text) == (503, "not ready\n")
    probe.ready = True
    assert (call(server, "/readyz").status, call(server, "/readyz").text) == (200, "ready\n")
    probe.ready = False
    assert call(server, "/readyz").status == 503


def test_a_probe_that_raises_answers_503_with_the_reason(start_server: StartServer) -> None:
    def broken() -> bool:
        raise ConnectionError("broker gone")

    server = start_server(is_ready=broken)
    reply = call(server, "/readyz")
    assert reply.status == 503
    assert reply.text == "not ready: check failed with ConnectionError: broker gone\n"


def test_execute_gets_the_exact_body_and_returns_its_answer(
    server: HttpServer, probe: Probe
) -> None:
    body = b'{"image": "mstc/python-test:latest", "jobName": "t\xc3\xa9st",  "x": [1]}'
    probe.answer = (200, "Job test-job-0f3c complete.")
    reply = call(server, "/mstc/worker/execute", method="POST", body=body, token=TOKEN)
    assert (reply.status, reply.text) == (200, "Job test-job-0f3c complete.")
    assert probe.bodies == [body]


def test_execute_passes_its_status_code_through(server: HttpServer, probe: Probe) -> None:
    probe.answer = (400, "Invalid request No image: {}")
    reply = call(server, "/mstc/worker/execute", method="POST", body=b"{}", token=TOKEN)
    assert (reply.status, reply.text) == (400, "Invalid request No image: {}")


def test_execute_that_raises_answers_500_in_the_java_style(start_server: StartServer) -> None:
    def explode(body: bytes) -> tuple[int, str]:
        raise RuntimeError("cluster on fire")

    server = start_server(execute=explode)
    reply = call(server, "/mstc/worker/execute", method="POST", body=b"{}", token=TOKEN)
    assert (reply.status, reply.text) == (500, "RuntimeError: cluster on fire")


def test_execute_without_a_runner_is_unavailable(start_server: StartServer) -> None:
    server = start_server(execute=None)
    reply = call(server, "/mstc/worker/execute", method="POST", body=b"{}", token=TOKEN)
    assert (reply.status, reply.text) == (503, "execute not available\n")


def test_oversized_body_is_refused_and_never_executed(
    start_server: StartServer, probe: Probe
) -> None:
    server = start_server(max_body_bytes=1024)
    reply = call(server, "/mstc/worker/execute", method="POST", body=b"x" * 1025, token=TOKEN)
    assert reply.status == 413
    assert "1025 bytes, over the limit of 1024 bytes" in reply.text
    assert (
        call(server, "/mstc/worker/execute", method="POST", body=b"x" * 1024, token=TOKEN).status
        == 200
    )
    assert probe.bodies == [b"x" * 1024]


def test_default_body_limit_is_one_mebibyte(server: HttpServer, probe: Probe) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 1_048_576
    too_big = b"{" + b" " * DEFAULT_MAX_BODY_BYTES + b"}"
    assert (
        call(server, "/mstc/worker/execute", method="POST", body=too_big, token=TOKEN).status == 413
    )
    assert probe.bodies == []


def test_a_long_execute_does_not_block_the_probes(start_server: StartServer) -> None:
    release = threading.Event()

    def slow(body: bytes) -> tuple[int, str]:
        release.wait(10)
        return 200, "Job slow-1 complete."

    server = start_server(execute=slow)
    results: list[Response] = []
    worker = threading.Thread(
        target=lambda: results.append(
            call(server, "/mstc/worker/execute", method="POST", body=b"{}", token=TOKEN)
        )
    )
    worker.start()
    try:
        assert call(server, "/healthz").status == 200
        assert call(server, "/metrics").status == 200
    finally:
        release.set()
        worker.join(10)
    assert [(r.status, r.text) for r in results] == [(200, "Job slow-1 complete.")]


@pytest.mark.parametrize("path", ["/", "/nope", "/mstc", "/mstc/worker/run", "/metrics/x"])
def test_unknown_paths_are_404(server: HttpServer, path: str) -> None:
    assert call(server, path).status == 404


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("PUT", "/mstc/worker", "GET, HEAD"),
        ("GET", "/mstc/worker/execute", "POST"),
    ],
)
def test_wrong_methods_are_405_with_allow(
    server: HttpServer, method: str, path: str, allow: str
) -> None:
    reply = call(server, path, method=method, body=b"{}" if method != "GET" else None)
    assert reply.status == 405
    assert reply.headers["Allow"] == allow


def test_head_answers_like_get_without_a_body(server: HttpServer) -> None:
    reply = call(server, "/healthz", method="HEAD")
    assert (reply.status, reply.text) == (200, "")
    assert reply.headers["Content-Length"] == "3"


def test_query_string_and_trailing_slash_are_tolerated(server: HttpServer) -> None:
    assert call(server, "/mstc/worker/?from=probe").text == "hello"


def test_port_in_use_raises_an_error_naming_the_port(metrics: Metrics) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = HttpServer(
            port, metrics, is_live=bool, is_ready=bool, execute=None, host="127.0.0.1"
        )
        with pytest.raises(HttpServerError, match=f"port {port} .*already in use"):
            server.start()


def test_stop_frees_the_port_and_is_idempotent(metrics: Metrics) -> None:
    server = HttpServer(0, metrics, is_live=bool, is_ready=bool, execute=None, host="127.0.0.1")
    server.stop()  # before start: nothing to do
    with server:
        port = server.port
        assert port != 0
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    server.stop()
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", port))


def test_access_log_is_debug_only(server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="mstc_worker.http"):
        call(server, "/healthz")
    lines = [
        r for r in caplog.records if r.name == "mstc_worker.http" and "/healthz" in r.getMessage()
    ]
    assert lines
    assert all(r.levelno == logging.DEBUG for r in lines)


def test_chunked_or_garbled_lengths_are_refused(server: HttpServer, probe: Probe) -> None:
    def post(headers: dict[str, str], body: bytes) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.putrequest("POST", "/mstc/worker/execute")
            connection.putheader("Authorization", f"Bearer {TOKEN}")
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            return connection.getresponse().status
        finally:
            connection.close()

    assert post({"Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n") == 411
    assert post({"Content-Length": "-5"}, b"") == 400
    assert post({"Content-Length": "lots"}, b"") == 400
    assert probe.bodies == []


def execute(server: HttpServer, **options: object) -> Response:
    return call(server, "/mstc/worker/execute", method="POST", body=b"{}", **options)  # type: ignore[arg-type]


def test_execute_without_a_token_is_401_with_a_bearer_challenge(
    server: HttpServer, probe: Probe
) -> None:
    reply = execute(server)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.text == "no bearer token: send Authorization: Bearer <token>\n"
    assert probe.bodies == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-of-some-length",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
    ],
)
def test_execute_with_a_wrong_token_is_401(
    server: HttpServer, probe: Probe, authorization: str
) -> None:
    reply = execute(server, headers={"Authorization": authorization})
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert probe.bodies == []


def test_the_bearer_scheme_is_case_insensitive(server: HttpServer, probe: Probe) -> None:
    assert execute(server, headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    assert probe.bodies == [b"{}"]


def test_execute_is_off_without_a_configured_token_and_the_rest_stays_open(
    start_server: StartServer, probe: Probe
) -> None:
    server = start_server(token=None)
    reply = execute(server, token="")
    assert reply.status == 403
    assert "REST execute is off" in reply.text
    assert "MSTC_HTTP_TOKEN_FILE" in reply.text
    assert probe.bodies == []
    for path in ("/mstc/worker", "/healthz", "/metrics"):
        assert call(server, path).status == 200, path


def test_a_refused_call_with_a_large_body_still_gets_its_answer(server: HttpServer) -> None:
    # The body is read and dropped first: unread input would make the kernel reset the socket.
    reply = call(server, "/mstc/worker/execute", method="POST", body=b"x" * 12_000_000)
    assert reply.status == 401
