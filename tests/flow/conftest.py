"""Fixtures of the flow service's tests: its store on both backends.

`database` runs each test that uses it twice: on SQLite (a file in the test's tmp dir) and on
the local stack's PostgreSQL (a schema of its own per test, dropped afterwards, so every test
starts from an empty, freshly migrated store). The PostgreSQL case is marked `stack` by its
parameter, so `pytest -m "not stack"` still runs the SQLite case without servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mstc_flow.store.db import Database
from tests.support.pg import temporary_schema
from tests.support.stack import StackInfo

PG_URL_VARIABLE = "MSTC_FLOW_TEST_PG_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.stack)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store (SQLAlchemy form), on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flow.sqlite3'}"
        return
    stack: StackInfo = request.getfixturevalue("stack")
    url = stack.env.get(PG_URL_VARIABLE)
    if not url:
        pytest.skip(f"this stack ({stack.kind}) has no PostgreSQL ({PG_URL_VARIABLE} unset)")
    with temporary_schema(url, "t") as narrowed:
        yield narrowed


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The store, migrated, on SQLite and on PostgreSQL."""
    opened = Database.open(database_url)
    try:
        yield opened
    finally:
        opened.close()
