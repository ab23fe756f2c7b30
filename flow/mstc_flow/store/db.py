"""The store's engine, its sessions and its schema migrations.

`Database.open(url)` makes the engine for an SQLite file or a PostgreSQL URL and brings the
schema to Alembic's newest revisions (`heads`: each concern adds its own revision on the base
one, so concerns do not edit each other's migrations). Every table is declared on `Base`.
Connection failures become `TransientError`; anything else from the driver stays a bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from mstc_flow.errors import TransientError

__all__ = ["Base", "Database"]

_MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    """Every table of the store."""


class Database:
    """One engine and its session factory; build with `Database.open`, pass it down."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Database:
        engine = create_engine(url, pool_pre_ping=True, **_engine_options(url))
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        database = cls(engine)
        if migrate:
            database.migrate()
        return database

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to every newest revision (idempotent; safe from several replicas
        on PostgreSQL, where Alembic's version table serialises the upgrades)."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "heads")
        except OperationalError as exc:
            problem = f"The store could not be reached to migrate it: {exc.orig}"
            raise TransientError(problem) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on leaving, rolled back on an exception."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise TransientError(f"The store is unreachable: {exc.orig}") from exc

    def reachable(self) -> bool:
        """Whether one trivial query succeeds now (the readiness probe's store half)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError:
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Threads of one process share the file; SQLite serialises writers itself.
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    return {"pool_size": 5, "max_overflow": 5}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the recorder writes; foreign keys are off by default there.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
