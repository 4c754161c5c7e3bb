"""Throwaway PostgreSQL databases for tests, on the server at 127.0.0.1 (trust authentication).

Use in a test module::

    from tests.support.postgres import pg_database  # noqa: F401  (pytest fixture)

    def test_x(pg_database: PgDatabase) -> None:
        engine_url = pg_database.url

or, for a database shared by several tests, ``require_server()`` then ``throwaway_database()``
in a module-scoped fixture.

Each test gets a new, uniquely named database that is dropped afterwards (open connections
are closed by the server: ``DROP DATABASE ... WITH (FORCE)``). Without a reachable server the
tests are skipped, or fail when the environment variable ``CI`` is set. The port and user
can be changed with ``TOMOSIGHT_TEST_PG_PORT`` and ``TOMOSIGHT_TEST_PG_USER``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

HOST = "127.0.0.1"
PORT = int(os.environ.get("TOMOSIGHT_TEST_PG_PORT", "5432"))
USER = os.environ.get("TOMOSIGHT_TEST_PG_USER", "postgres")
ADMIN_DB = "postgres"


@dataclass(frozen=True)
class PgDatabase:
    """One database on the test server."""

    name: str
    host: str = HOST
    port: int = PORT
    user: str = USER

    @property
    def url(self) -> str:
        """SQLAlchemy/MLflow URL with the psycopg2 driver, without a password (trust auth).

        The driver is named because SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3,
        which the project does not install.
        """
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.name}"

    def dagster_env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables ``deployment/dagster/dagster.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": self.name,
        }


def _connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=dbname, connect_timeout=3)


def server_error() -> str | None:
    """Why the test server cannot be used, or None when it answers."""
    try:
        import psycopg2
    except ImportError as exc:
        return f"psycopg2 is not installed: {exc}"
    try:
        _connect(ADMIN_DB).close()
    except psycopg2.Error as exc:
        return f"no PostgreSQL at {HOST}:{PORT} as {USER!r}: {str(exc).strip()}"
    return None


def _admin(statement: Any) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    con = _connect(ADMIN_DB)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(statement)
    finally:
        con.close()


def create_database(prefix: str = "tomosight_test") -> PgDatabase:
    """Create an empty database with a unique name."""
    from psycopg2 import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return PgDatabase(name)


def drop_database(database: PgDatabase) -> None:
    """Drop ``database``, closing the connections still open on it."""
    from psycopg2 import sql

    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name)))


def database_exists(name: str) -> bool:
    """Whether the server has a database called ``name``."""
    return bool(query(PgDatabase(ADMIN_DB), "SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def query(database: PgDatabase, sql_text: str, params: Sequence[object] = ()) -> list[tuple]:
    """Rows of one SELECT on ``database`` (a short-lived connection)."""
    con = _connect(database.name)
    try:
        with con.cursor() as cur:
            cur.execute(sql_text, list(params))
            return cur.fetchall()
    finally:
        con.close()


@contextmanager
def throwaway_database(prefix: str = "tomosight_test") -> Iterator[PgDatabase]:
    """A fresh database, dropped on exit."""
    database = create_database(prefix)
    try:
        yield database
    finally:
        drop_database(database)


def require_server() -> None:
    """Skip the calling test (fail it when ``CI`` is set) if the server cannot be used."""
    problem = server_error()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture
def pg_database() -> Iterator[PgDatabase]:
    """A new empty database for one test; skipped (failed under CI) without a server."""
    require_server()
    with throwaway_database() as database:
        yield database
