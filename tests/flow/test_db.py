"""The store's engine: reachability as the readiness probe sees it, on both backends."""

from __future__ import annotations

import socket

from mstc_flow.store.db import Database


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_a_store_that_answers_is_reachable(database: Database) -> None:
    assert database.reachable()


def test_a_postgresql_nobody_listens_for_is_not_reachable() -> None:
    url = f"postgresql+psycopg://flow:secret@127.0.0.1:{_closed_port()}/flow?connect_timeout=2"
    database = Database.open(url, migrate=False)
    try:
        assert not database.reachable()
    finally:
        database.close()
