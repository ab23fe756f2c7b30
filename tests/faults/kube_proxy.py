"""A fault-injecting HTTPS proxy between the worker and the real Kubernetes API server.

Owns the Kubernetes API faults of the fault suite: the worker under test is given a
kubeconfig naming this proxy, and every request it makes passes through to the real API
server unless a rule a test set says otherwise. The proxy terminates TLS with a certificate
of the stack's own CA (so the worker verifies it exactly as it verifies the API server),
forwards each request over a fresh TLS connection with the stack's admin credentials, and
streams watch responses through line by line, which is what lets it slip an ERROR event
into an open watch or cut it at a moment the test chooses. It records every exchange, so a
test can assert that the fault it asked for really happened, and when.

Nothing is simulated beyond the one answer a rule replaces: the objects, versions, watch
events and logs the worker sees are the API server's own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Exchange", "KubeFaultProxy", "Rule", "issue_server_cert"]

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


@dataclass
class Rule:
    """Answer `status` to the next `times` requests that match (None: until cleared).

    `method` must match the HTTP method in full and `path` is searched in the request
    target (path and query, so ``watch=true`` can be matched); `body`, when given, is
    searched in the request body. With `forward` the request reaches the API server first
    and only its answer is replaced: a create that worked but whose answer was lost.
    """

    method: str
    path: str
    status: int
    times: int | None = 1
    retry_after: int | None = None
    body: str | None = None
    forward: bool = False
    hits: int = 0

    def matches(self, method: str, target: str, body: bytes) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not re.fullmatch(self.method, method) or not re.search(self.path, target):
            return False
        return self.body is None or re.search(self.body, body.decode(errors="replace")) is not None


@dataclass(frozen=True)
class Exchange:
    """One request through the proxy: when it came, what the client got, and from whom."""

    at: float  # time.monotonic() when the request arrived
    method: str
    target: str
    status: int
    injected: bool  # the status came from a rule, not from the API server
    upstream_status: int | None  # what the API server answered; None when not asked
    body: bytes = b""  # the request's


@dataclass(eq=False)  # each open watch is its own, kept in a set
class _Watch:
    target: str
    inbox: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)


def issue_server_cert(pki: Path, into: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 signed by the stack's CA (``pki/ca.crt``, ``ca.key``)."""
    into.mkdir(parents=True, exist_ok=True)
    key, csr, crt = into / "proxy.key", into / "proxy.csr", into / "proxy.crt"
    subj = ["-subj", "/CN=mstc-fault-proxy"]
    ca_args = ["-CA", pki / "ca.crt", "-CAkey", pki / "ca.key", "-CAserial", into / "ca.srl"]
    steps = [
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, *subj],
        ["x509", "-req", "-in", csr, *ca_args, "-CAcreateserial", "-days", "2", "-out", crt,
         "-extfile", "/dev/stdin"],
    ]  # fmt: skip
    for args in steps:
        subprocess.run(
            ["openssl", *map(str, args)],
            input="subjectAltName=IP:127.0.0.1,DNS:localhost",
            text=True,
            capture_output=True,
            check=True,
        )
    return crt, key


class KubeFaultProxy:
    """Listens on 127.0.0.1:`port`, forwards to `upstream` (an https URL) unless a rule fires."""

    def __init__(
        self,
        upstream: str,
        *,
        ca: Path,
        client_cert: tuple[Path, Path],
        server_cert: tuple[Path, Path],
    ) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 443)
        self._ca = ca
        self._client_tls = ssl.create_default_context(cafile=str(ca))
        self._client_tls.load_cert_chain(*map(str, client_cert))
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(*map(str, server_cert))
        self._lock = threading.Condition()
        self._rules: list[Rule] = []
        self._exchanges: list[Exchange] = []
        self._watches: set[_Watch] = set()
        self._sockets: set[socket.socket] = set()
        self.expired_events = 0  # 410 ERROR events written into open watches
        self.cut_watches_count = 0  # open watches whose connection was cut
        self._server = _TlsServer(("127.0.0.1", 0), _Handler, server_tls, self)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> KubeFaultProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
            watches = list(self._watches)
        for watch in watches:
            watch.inbox.put(("cut", b""))
        for sock in sockets:
            _hang_up(sock)

    def write_kubeconfig(self, path: Path, admin_kubeconfig: Path) -> Path:
        """A copy of the stack's kubeconfig whose server is this proxy."""
        doc = json.loads(admin_kubeconfig.read_text())
        for cluster in doc["clusters"]:
            cluster["cluster"]["server"] = self.url
        path.write_text(json.dumps(doc, indent=2))
        path.chmod(0o600)
        return path

    # --- what a test controls -------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def expire_watches(self, path: str = "") -> int:
        """End every open watch matching `path` with a 410 Gone ERROR event; how many."""
        return self._signal_watches(path, "expire")

    def cut_watches(self, path: str = "") -> int:
        """Drop the connection of every open watch matching `path`; how many."""
        return self._signal_watches(path, "cut")

    def open_watches(self, path: str = "") -> int:
        with self._lock:
            return sum(1 for w in self._watches if re.search(path, w.target))

    def wait_watches(self, count: int, path: str = "", timeout: float = 30) -> None:
        """Until at least `count` watches matching `path` are open."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.open_watches(path) >= count, timeout):
                raise TimeoutError(f"{count} watches on {path!r} not open within {timeout} s")

    def exchanges(
        self, method: str = ".*", path: str = "", *, body: str | None = None, since: float = 0.0
    ) -> list[Exchange]:
        """The exchanges matched as a `Rule` matches requests, from `since` on, in order."""
        with self._lock:
            return [
                e
                for e in self._exchanges
                if e.at >= since
                and re.fullmatch(method, e.method)
                and re.search(path, e.target)
                and (body is None or re.search(body, e.body.decode(errors="replace")))
            ]

    def _signal_watches(self, path: str, what: str) -> int:
        with self._lock:
            chosen = [w for w in self._watches if re.search(path, w.target)]
        for watch in chosen:
            watch.inbox.put((what, b""))
        return len(chosen)

    # --- used by the handler --------------------------------------------------------------

    def _rule_for(self, method: str, target: str, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target, body):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def _track(self, item: Any, add: bool) -> None:
        with self._lock:
            into: set[Any] = self._watches if isinstance(item, _Watch) else self._sockets
            if add:
                into.add(item)
            else:
                into.discard(item)
            self._lock.notify_all()

    def _connect(self) -> http.client.HTTPSConnection:
        # One upstream connection per request: a watch holds its own for its whole life.
        return http.client.HTTPSConnection(*self._upstream, context=self._client_tls, timeout=600)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext,
        proxy: KubeFaultProxy,
    ) -> None:
        super().__init__(address, handler)
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
        self.proxy._track(conn, add=True)
        try:
            _Handler(conn, client_address, self)
        finally:
            self.proxy._track(conn, add=False)
            _hang_up(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the exchanges are recorded instead

    def _any(self) -> None:
        proxy = self.server.proxy
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rule = proxy._rule_for(self.command, self.path, body)
        upstream_status: int | None = None
        if rule is None or rule.forward:
            try:
                conn, response = self._forward(body)
            except (OSError, http.client.HTTPException) as exc:
                # The API server is down (a restart): say so the way a load balancer would.
                proxy._record(Exchange(arrived, self.command, self.path, 503, False, None, body))
                self._answer(503, [], _status(503, f"fault proxy: API server unreachable: {exc}"))
                return
            upstream_status = response.status
            if rule is None and _is_watch(self.path) and response.status == 200:
                proxy._record(Exchange(arrived, self.command, self.path, 200, False, 200, body))
                self._stream_watch(conn, response)
                return
            data = response.read()
            conn.close()
            if rule is None:
                status = response.status
                proxy._record(
                    Exchange(arrived, self.command, self.path, status, False, status, body)
                )
                self._answer(status, response.getheaders(), data)
                return
        proxy._record(
            Exchange(arrived, self.command, self.path, rule.status, True, upstream_status, body)
        )
        headers = [("Content-Type", "application/json")]
        if rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
        self._answer(rule.status, headers, _status(rule.status, "injected by the fault proxy"))

    def _forward(self, body: bytes) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        conn = self.server.proxy._connect()
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
        watch = _Watch(self.path)
        self.send_response_only(200)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        def pump() -> None:
            # The only thread that touches the upstream response, so it alone closes it.
            try:
                while data := response.read1(65536):
                    watch.inbox.put(("data", data))
            except (OSError, ValueError, http.client.HTTPException):
                pass  # the API server went away, or the handler shut the socket
            finally:
                response.close()
                conn.close()
                watch.inbox.put(("end", b""))

        threading.Thread(target=pump, daemon=True).start()
        proxy._track(watch, add=True)
        pending = b""
        try:
            while True:
                what, data = watch.inbox.get()
                if what == "data":
                    *lines, pending = (pending + data).split(b"\n")
                    if lines:
                        self._chunk(b"".join(line + b"\n" for line in lines))
                    continue
                if what == "cut":
                    with proxy._lock:
                        proxy.cut_watches_count += 1
                    self.close_connection = True
                    _hang_up(self.connection)
                    return
                if what == "expire":
                    self._chunk(_status_event(410))
                    with proxy._lock:
                        proxy.expired_events += 1
                self._chunk(b"")  # the end of the response; the connection stays usable
                return
        except OSError:
            self.close_connection = True
        finally:
            proxy._track(watch, add=False)
            upstream = conn.sock
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)  # wakes the pump, which closes it

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _is_watch(target: str) -> bool:
    return re.search(r"[?&]watch=(true|1)(&|$)", target) is not None


def _status(code: int, message: str) -> bytes:
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


def _status_event(code: int) -> bytes:
    status = json.loads(_status(code, "too old resource version (injected by the fault proxy)"))
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def _hang_up(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked reading this socket; close() alone would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
