"""The API server's transport over real HTTP (uvicorn on 127.0.0.1), the engine a fake.

What is checked: answers on a kept-alive connection are not held back by TCP's delayed
acknowledgement. Without TCP_NODELAY on the accepted sockets, every response after the first
on a connection waited about 40 ms for the client's ACK of its headers (Linux's shortest
delayed ACK), which `make bench SCENARIOS=dashboard` showed as a 44 ms floor on every page.
"""

from __future__ import annotations

import statistics
import threading
import time

import urllib3
from prometheus_client import CollectorRegistry

from mstc_flow.api import create_app, serve
from tests.flow.api_support import FakePorts, api_settings

DELAYED_ACK_MS = 40  # Linux's minimum delayed ACK: a stalled answer takes at least this


def test_kept_alive_answers_are_not_held_for_the_clients_delayed_ack() -> None:
    settings, stop = api_settings(), threading.Event()
    server = serve(create_app(FakePorts(), settings, CollectorRegistry()), settings, stop)
    http = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1, retries=False)
    try:
        times = []
        for _ in range(11):  # one connection, kept alive: every answer after the first
            started = time.perf_counter()
            assert http.request("GET", "/healthz").status == 200
            times.append((time.perf_counter() - started) * 1000)
        assert http.num_connections == 1
        assert statistics.median(times[1:]) < DELAYED_ACK_MS / 2, times
    finally:
        http.close()
        stop.set()
        assert server.join(10)
