"""The view stores the store-level tests run on: SQLite, PostgreSQL on loopback, and Cassandra.

``FLUVIAL_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is
the database; each test gets a schema of its own (a random name), dropped after it.
Out of reach, a PostgreSQL test skips in one line -- or fails, with
``FLUVIAL_REQUIRE_SERVICES=1``.  Cassandra is the test run's own node (tests/cassandra_node.py:
installed from npm and started once per run); each test gets a keyspace of its own, dropped
after it.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"
POSTGRES = os.environ.get("FLUVIAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STORE_KINDS = ("sqlite", "postgresql", "cassandra")
"""The view stores the store-level tests run on."""


@functools.cache
def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES, connect_timeout=3):
            return None
    except Exception as exc:   # psycopg missing, or the server out of reach
        return f"PostgreSQL at {POSTGRES} is not reachable ({str(exc).strip().splitlines()[0]})"


def postgres_or_skip() -> str:
    """The test database's URL; skip in one line when PostgreSQL is out of reach (fail when required)."""
    problem = _postgres_problem()
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(problem)
        pytest.skip(problem)
    return POSTGRES


@contextmanager
def fresh_schema_url() -> Iterator[str]:
    """A ``postgresql://`` store URL with a fresh schema, dropped at the end."""
    base = postgres_or_skip()
    schema = f"test_{secrets.token_hex(6)}"
    try:
        yield f"{base}?schema={schema}"
    finally:
        drop_schema(schema)


@contextmanager
def store_url_of(kind: str, directory: Path) -> Iterator[str]:
    """The URL of an empty store of ``kind`` (a SQLite file in ``directory``, a fresh schema or keyspace)."""
    if kind == "sqlite":
        yield f"sqlite://{Path(directory) / 'views.db'}"
    elif kind == "cassandra":
        from cassandra_node import fresh_keyspace_url

        with fresh_keyspace_url() as url:
            yield url
    else:
        with fresh_schema_url() as url:
            yield url


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
