"""The HTTP side of the Kubernetes fault proxy: TLS in, TLS out, watches streamed line by line.

Owns the mechanics of standing between a client and the API server: terminating TLS in the
connection's own thread, forwarding a request over a fresh upstream connection, answering
with a Kubernetes Status when told to, and passing a watch through one complete line at a
time so that an event can be slipped in, or the connection cut, between two real events.
What to do with each request is asked of a `Backend` (`KubeFaultProxy` in kube_proxy.py,
which also holds the record), so this half knows nothing of rules or tests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol

__all__ = ["Answer", "Backend", "TlsServer", "Watch", "hang_up", "is_watch", "status_body"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "accept-encoding",
}
# The Status reason the API server itself gives for each status a rule may answer.
_REASONS = {
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(eq=False)  # each open watch is its own, kept in a set
class Watch:
    """An open watch: its request target and the messages for the thread serving it."""

    target: str
    inbox: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)


class Answer(Protocol):
    """The answer a backend chose for one request (a rule, in kube_proxy)."""

    status: int | None  # None: the API server's own answer (after `delay`)
    retry_after: int | None
    forward: bool  # ask the API server first, then replace its answer
    delay: float  # seconds the request is held before anything else happens


class Backend(Protocol):
    def rule_for(self, method: str, target: str, body: bytes) -> Answer | None: ...

    def record(
        self, at: float, method: str, target: str, status: int, injected: bool,
        upstream_status: int | None, body: bytes,
    ) -> None: ...  # fmt: skip

    def track(self, item: Watch | socket.socket, add: bool) -> None: ...

    def count(self, what: Literal["expired", "cut"]) -> None: ...

    def connect(self) -> http.client.HTTPSConnection: ...


class TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext, proxy: Backend) -> None:
        super().__init__(address, _Handler)
        self.tls = tls
        self.proxy = proxy

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the connection's own thread, never in the accepting one.
        request.settimeout(10)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        conn.settimeout(None)
        self.proxy.track(conn, add=True)
        try:
            _Handler(conn, client_address, self)
        finally:
            self.proxy.track(conn, add=False)
            hang_up(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the exchanges are recorded instead

    def _any(self) -> None:
        proxy = self.server.proxy
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = proxy.rule_for(self.command, self.path, body)
        if rule is not None and rule.delay:
            time.sleep(rule.delay)  # the fault itself: an API server slow to answer
        if rule is not None and rule.status is None:
            rule = None  # delayed only: from here on, as if no rule had matched
        upstream_status: int | None = None
        if rule is None or rule.forward:
            try:
                conn, response = self._forward(body)
            except (OSError, http.client.HTTPException) as exc:
                # The API server is down (a restart): say so the way a load balancer would.
                proxy.record(arrived, self.command, self.path, 503, False, None, body)
                self._answer(
                    503, [], status_body(503, f"fault proxy: API server unreachable: {exc}")
                )
                return
            upstream_status = response.status
            if rule is None and is_watch(self.path) and response.status == 200:
                proxy.record(arrived, self.command, self.path, 200, False, 200, body)
                self._stream_watch(conn, response)
                return
            data = response.read()
            conn.close()
            if rule is None:
                status = response.status
                proxy.record(arrived, self.command, self.path, status, False, status, body)
                self._answer(status, response.getheaders(), data)
                return
        assert rule.status is not None  # a rule without a status was dropped above
        proxy.record(arrived, self.command, self.path, rule.status, True, upstream_status, body)
        headers = [("Content-Type", "application/json")]
        if rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
        self._answer(rule.status, headers, status_body(rule.status, "injected by the fault proxy"))

    def _forward(self, body: bytes) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        conn = self.server.proxy.connect()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"  # watches are split into lines as they come
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815  (http.server's names)

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream_watch(
        self, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse
    ) -> None:
        """Pass the watch through a line at a time until it ends, or a test expires or cuts it."""
        proxy = self.server.proxy
        watch = Watch(self.path)
        self._open_stream(response)
        threading.Thread(target=_pump, args=(watch, conn, response), daemon=True).start()
        proxy.track(watch, add=True)
        try:
            self._relay(watch)
        except OSError:
            self.close_connection = True
        finally:
            proxy.track(watch, add=False)
            upstream = conn.sock
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)  # wakes the pump, which closes it

    def _open_stream(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(200)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _relay(self, watch: Watch) -> None:
        """Whole lines to the client as they come; then the end, a 410 event, or a cut."""
        pending = b""
        while True:
            what, data = watch.inbox.get()
            if what != "data":
                break
            *lines, pending = (pending + data).split(b"\n")
            if lines:
                self._chunk(b"".join(line + b"\n" for line in lines))
        proxy = self.server.proxy
        if what == "cut":
            proxy.count("cut")
            self.close_connection = True
            hang_up(self.connection)
            return
        if what == "expire":
            self._chunk(status_event(410))
            proxy.count("expired")
        self._chunk(b"")  # the end of the response; the connection stays usable

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _pump(
    watch: Watch, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse
) -> None:
    """Upstream bytes into the watch's inbox; the only thread that touches the response, so
    it alone closes it."""
    try:
        while data := response.read1(65536):
            watch.inbox.put(("data", data))
    except (OSError, ValueError, http.client.HTTPException):
        pass  # the API server went away, or the handler shut the socket
    finally:
        response.close()
        conn.close()
        watch.inbox.put(("end", b""))


def is_watch(target: str) -> bool:
    return re.search(r"[?&]watch=(true|1)(&|$)", target) is not None


def status_body(code: int, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": _REASONS.get(code, "InternalError"),
            "code": code,
        }
    ).encode()


def status_event(code: int) -> bytes:
    status = json.loads(status_body(code, "too old resource version (injected by the fault proxy)"))
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def hang_up(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked reading this socket; close() alone would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
