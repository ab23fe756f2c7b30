"""The worker's HTTP port: metrics, health probes, and the Java worker's REST controller.

One port (MSTC_HTTP_PORT, 8080 by default) serves

* ``GET /metrics``: the `Metrics` registry for Prometheus;
* ``GET /healthz`` and ``GET /readyz``: Kubernetes' liveness and readiness probes,
  answered by callables the service passes in (this module knows nothing about
  brokers or watches);
* ``GET /mstc/worker`` ("hello") and ``POST /mstc/worker/execute``: the Java
  worker's controller, so REST clients of the Java worker keep working. Execute
  hands the raw body to a callable that blocks until the request is done (the
  service sends it through the work queue, so it waits its turn like any other).

Execute, and only execute, needs ``Authorization: Bearer <token>``: anyone who
can reach the port (a Job's pod included) could otherwise start Jobs. Without a
configured token it is off (403), so a worker is safe before it is configured;
a missing or wrong token gets 401 with ``WWW-Authenticate: Bearer``. Probes,
metrics and hello stay open, as the kubelet and Prometheus send no token.

It runs the standard library's ThreadingHTTPServer in a daemon thread: the
traffic is a scrape every few seconds plus probes, which needs no framework, and
a thread per connection lets a long execute call block without stalling probes.
"""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from mstc_worker.errors import MstcError
from mstc_worker.metrics import Metrics

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Execute", "HttpServer", "HttpServerError"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
# An oversized body is read and thrown away (up to this much) before the 413 goes
# out: closing a socket with unread input makes the kernel send a reset, and the
# client would see "connection reset" instead of the 413.
_DRAIN_LIMIT = 16 * 1_048_576
_TEXT = "text/plain; charset=utf-8"
# How often the serving thread checks for stop(): stop() waits up to this long.
# The stdlib's 0.5 s made every stop, and so every test, half a second slower;
# 20 idle wake-ups a second cost nothing measurable.
_POLL_SECONDS = 0.05

Execute = Callable[[bytes], tuple[int, str]]
"""Runs one request body to its end and returns (HTTP status, Java `result` text)."""


class HttpServerError(MstcError):
    """The HTTP port could not be opened (in use, not permitted, bad address)."""


class _Server(ThreadingHTTPServer):
    # Probe and scrape threads must not keep the process alive, and stop() must not
    # wait for an execute call that may run for hours.
    daemon_threads = True

    def __init__(self, owner: HttpServer, address: tuple[str, int]) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can hang
        # start-up for seconds in a cluster; nothing here needs that name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server_version = "mstc-worker"
    # A client that stops sending mid-request must not hold a thread forever.
    timeout = 60

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        owner = cast(_Server, self.server).owner
        # Query strings are ignored and a trailing slash is tolerated, as Spring MVC before 6 did.
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes: dict[str, dict[str, Callable[[HttpServer], None]]] = {
            "/metrics": {"GET": self._metrics},
            "/healthz": {"GET": self._healthz},
            "/readyz": {"GET": self._readyz},
            "/mstc/worker": {"GET": self._hello},
            "/mstc/worker/execute": {"POST": self._execute},
        }
        methods = routes.get(path)
        if methods is None:
            self._send(HTTPStatus.NOT_FOUND, f"no route for {path}\n")
            return
        # HEAD is GET without the body, which _send leaves out.
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{method} not allowed on {path}\n",
                headers={"Allow": ", ".join(allowed)},
            )
            return
        handler(owner)

    def _metrics(self, owner: HttpServer) -> None:
        body, content_type = owner.metrics.render(self.headers.get("Accept"))
        self._send(HTTPStatus.OK, body, content_type=content_type)

    def _healthz(self, owner: HttpServer) -> None:
        self._probe(owner.is_live, "ok", "not live")

    def _readyz(self, owner: HttpServer) -> None:
        self._probe(owner.is_ready, "ready", "not ready")

    def _probe(self, check: Callable[[], bool], good: str, bad: str) -> None:
        try:
            healthy, reason = check(), bad
        except Exception as exc:
            # A probe that cannot even ask is a failed probe, never a 500 page.
            log.warning("%s check raised", bad.removeprefix("not "), exc_info=True)
            healthy, reason = False, f"{bad}: check failed with {type(exc).__name__}: {exc}"
        if healthy:
            self._send(HTTPStatus.OK, good + "\n")
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, reason + "\n")

    def _hello(self, _owner: HttpServer) -> None:
        # Exactly the Java controller's text, without a newline, for clients that compare it.
        self._send(HTTPStatus.OK, "hello")

    def _execute(self, owner: HttpServer) -> None:
        refusal = _refusal(owner.token, self.headers.get("Authorization"))
        if refusal is not None:
            status, text, headers = refusal
            self._discard_body()
            self._send(status, text, headers=headers)
            return
        body = self._read_body(owner.max_body_bytes)
        if body is None:
            return
        if owner.execute is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "execute not available\n")
            return
        try:
            status, text = owner.execute(body)
        except Exception as exc:
            log.exception("POST /mstc/worker/execute failed")
            # The Java worker's "<error class>: <message>" text.
            status, text = HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}"
        self._send(status, text)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering why it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the chunks stay unread
            self._send(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks\n")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            self._send(HTTPStatus.BAD_REQUEST, "invalid Content-Length\n")
            return None
        if length > limit:
            self._drain(length)
            self._send(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body is {length} bytes, over the limit of {limit} bytes\n",
            )
            return None
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        """Read and drop the body of a refused request, so the answer is not lost to a reset."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > 0:
            self._drain(length)
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True

    def _drain(self, length: int) -> None:
        self.close_connection = True
        remaining = min(length, _DRAIN_LIMIT)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65_536))
            if not chunk:
                break
            remaining -= len(chunk)

    def _send(
        self,
        status: int,
        body: str | bytes,
        *,
        content_type: str = _TEXT,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes arrive every few seconds; at INFO they would drown the
        # lines that name Jobs.
        log.debug("%s %s", self.address_string(), format % args)


def _refusal(
    token: str | None, authorization: str | None
) -> tuple[int, str, dict[str, str]] | None:
    """Why an execute call may not go ahead (status, text, headers); None when it may."""
    if token is None:
        return (HTTPStatus.FORBIDDEN, "REST execute is off: the worker has no token "
                "(set MSTC_HTTP_TOKEN_FILE); send requests through the queue\n", {})  # fmt: skip
    scheme, _, given = (authorization or "").partition(" ")
    # compare_digest takes as long whatever the first wrong byte, so timing tells nothing.
    if scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), token.encode("utf-8")
    ):
        return None
    challenge = {"WWW-Authenticate": 'Bearer realm="mstc-worker"'}
    what = "wrong bearer token" if authorization else "no bearer token"
    return (HTTPStatus.UNAUTHORIZED, f"{what}: send Authorization: Bearer <token>\n",
            challenge)  # fmt: skip


class HttpServer:
    """The HTTP port in a daemon thread: `start()`, `stop()`, and the bound `port`."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        *,
        is_live: Callable[[], bool],
        is_ready: Callable[[], bool],
        execute: Execute | None,
        token: str | None = None,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.metrics = metrics
        self.is_live = is_live
        self.is_ready = is_ready
        self.execute = execute
        self.token = token
        self.host = host
        self.max_body_bytes = max_body_bytes
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on once started (the one picked, if asked for port 0)."""
        return self._port

    def start(self) -> None:
        """Bind the port and serve in a daemon thread; HttpServerError if it cannot bind."""
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        try:
            server = _Server(self, (self.host, self._port))
        except OSError as exc:
            hint = " (port already in use; set MSTC_HTTP_PORT to a free port)"
            detail = hint if exc.errno == errno.EADDRINUSE else f": {exc.strerror or exc}"
            raise HttpServerError(
                f"cannot serve HTTP on {self.host} port {self._port}{detail}"
            ) from exc
        self._server = server
        self._port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever,
            args=(_POLL_SECONDS,),
            name=f"http-{self._port}",
            daemon=True,
        )
        self._thread.start()
        log.info("HTTP listening on %s port %d", self.host, self._port)

    def stop(self) -> None:
        """Stop listening and close the port; safe to call twice or before start."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
