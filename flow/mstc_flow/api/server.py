"""`serve`: the API on uvicorn, in a thread of the service's process, until a stop event.

The socket is bound and listening before `serve` returns, so the bound port is known (port 0
asks the system for a free one, as tests do) and a connection made at once waits in the
backlog instead of being refused. Setting `stop_event` makes uvicorn finish the requests in
hand and return; `ApiServer.join` waits for that. uvicorn installs no signal handlers off the
main thread and is given no logging configuration: the service owns both.
"""

from __future__ import annotations

import socket
import threading

import uvicorn
from fastapi import FastAPI

from mstc_flow.errors import ConfigError
from mstc_flow.settings import FlowSettings

__all__ = ["ApiServer", "serve"]

_BACKLOG = 128


class ApiServer:
    """The running API: where it listens, and its thread."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self.host, self.port = sock.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="mstc-flow-api", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self, stop_event: threading.Event) -> None:
        self._thread.start()
        threading.Thread(
            target=self._stop_on, args=(stop_event,), name="mstc-flow-api-stop", daemon=True
        ).start()

    def _stop_on(self, stop_event: threading.Event) -> None:
        stop_event.wait()
        self._server.should_exit = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the server to stop (after the stop event); True once it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def serve(app: FastAPI, settings: FlowSettings, stop_event: threading.Event) -> ApiServer:
    """Start the API on `settings.http_host:http_port`; it stops when `stop_event` is set.

    Raises ConfigError when the address cannot be bound (in use, not this host's).
    """
    sock = _listening_socket(settings.http_host, settings.http_port)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    api = ApiServer(uvicorn.Server(config), sock)
    api.start(stop_event)
    return api


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP. Without it, a kept-alive connection's response body waited for the
    # client's delayed ACK of the headers: about 40 ms on every request (make bench dashboard).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            [f"MSTC_FLOW_HTTP_HOST/MSTC_FLOW_HTTP_PORT: cannot listen on {host}:{port}: {exc}"]
        ) from exc
    return sock
