"""The flow service's store: SQLAlchemy 2 over SQLite (one replica) or PostgreSQL (several).

Only this package imports SQLAlchemy and Alembic. `db` owns the engine, sessions and
migrations; each other module owns the tables and queries of one concern (history,
firings, ...) and translates database errors into the flow's error tree.
"""
