"""A TCP pass-through a test can cut: the real server behind it, a broken network in front.

Used to break the worker's connections to the real API server at a moment the test
chooses (TLS passes through untouched, so nothing about the server is simulated).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `upstream`; `block()` cuts and refuses connections."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._blocked = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def block(self) -> None:
        """Cut every open connection; connections made while blocked are closed at once."""
        self._blocked.set()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _hang_up(sock)

    def unblock(self) -> None:
        self._blocked.clear()

    def close(self) -> None:
        self.block()
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if self._blocked.is_set():
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _hang_up(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._sockets.discard(sock)
                _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv() on this socket; close() alone would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
