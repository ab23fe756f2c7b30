"""A fault-injecting HTTPS proxy between the worker and the real Kubernetes API server.

Owns the Kubernetes API faults of the fault suite: the worker under test is given a
kubeconfig naming this proxy, and every request it makes passes through to the real API
server unless a rule a test set says otherwise. The proxy terminates TLS with a certificate
of the stack's own CA (so the worker verifies it exactly as it verifies the API server),
forwards each request over a fresh TLS connection with the stack's admin credentials, and
streams watch responses through line by line, which is what lets it slip an ERROR event
into an open watch or cut it at a moment the test chooses. It records every exchange, so a
test can assert that the fault it asked for really happened, and when. This module is what
a test controls (rules, watch faults, the record); the HTTP mechanics are in proxy_http.py.

Nothing is simulated beyond the one answer a rule replaces: the objects, versions, watch
events and logs the worker sees are the API server's own.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.faults.proxy_http import TlsServer, Watch, hang_up

__all__ = ["Exchange", "KubeFaultProxy", "Rule", "issue_server_cert"]


@dataclass
class Rule:
    """Answer `status` to the next `times` requests that match (None: until cleared).

    `method` must match the HTTP method in full and `path` is searched in the request
    target (path and query, so ``watch=true`` can be matched); `body`, when given, is
    searched in the request body. With `forward` the request reaches the API server first
    and only its answer is replaced: a create that worked but whose answer was lost.
    `delay` holds the request that many seconds first (a slow API server); a rule with
    status None then passes the API server's own answer on.
    """

    method: str
    path: str
    status: int | None
    times: int | None = 1
    retry_after: int | None = None
    body: str | None = None
    forward: bool = False
    delay: float = 0.0
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
        self._client_tls = ssl.create_default_context(cafile=str(ca))
        self._client_tls.load_cert_chain(*map(str, client_cert))
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(*map(str, server_cert))
        self._lock = threading.Condition()
        self._rules: list[Rule] = []
        self._exchanges: list[Exchange] = []
        self._watches: set[Watch] = set()
        self._sockets: set[socket.socket] = set()
        self.expired_events = 0  # 410 ERROR events written into open watches
        self.watches_cut = 0  # open watches whose connection was cut
        self._server = TlsServer(("127.0.0.1", 0), server_tls, self)
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
            hang_up(sock)

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

    # --- the Backend of proxy_http --------------------------------------------------------

    def rule_for(self, method: str, target: str, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target, body):
                    rule.hits += 1
                    return rule
        return None

    def record(
        self, at: float, method: str, target: str, status: int, injected: bool,
        upstream_status: int | None, body: bytes,
    ) -> None:  # fmt: skip
        with self._lock:
            self._exchanges.append(
                Exchange(at, method, target, status, injected, upstream_status, body)
            )

    def count(self, what: Literal["expired", "cut"]) -> None:
        with self._lock:
            if what == "expired":
                self.expired_events += 1
            else:
                self.watches_cut += 1

    def track(self, item: Watch | socket.socket, add: bool) -> None:
        with self._lock:
            into: set[Any] = self._watches if isinstance(item, Watch) else self._sockets
            if add:
                into.add(item)
            else:
                into.discard(item)
            self._lock.notify_all()

    def connect(self) -> http.client.HTTPSConnection:
        # One upstream connection per request: a watch holds its own for its whole life.
        return http.client.HTTPSConnection(*self._upstream, context=self._client_tls, timeout=600)
