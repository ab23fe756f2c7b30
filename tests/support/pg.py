"""A PostgreSQL schema of a test's own in the stack's server, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


@contextmanager
def temporary_schema(url: str, prefix: str) -> Iterator[str]:
    """`url` (SQLAlchemy form) narrowed to a new schema: every table, index and Alembic's
    version table land there, and all of it goes when the block ends."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
