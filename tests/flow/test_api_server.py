"""The API server's listening socket: a TCP socket by protocol number, so its answers are not
held back by TCP's delayed acknowledgement.

asyncio sets TCP_NODELAY on the connections a server accepts only when the listening socket's
`proto` says TCP (`socket.socket(family, SOCK_STREAM)` leaves it 0). Without it, every answer
after the first on a kept-alive connection waited about 40 ms for the client's ACK of its
headers, which `make bench SCENARIOS=dashboard` showed as a 44 ms floor on every page (the
timing itself is the benchmark's to measure, not a test's).
"""

from __future__ import annotations

import socket

from mstc_flow.api.server import _listening_socket


def test_the_listening_socket_says_tcp_so_accepted_connections_get_nodelay() -> None:
    sock = _listening_socket("127.0.0.1", 0)
    try:
        assert sock.type == socket.SOCK_STREAM
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
