"""Fixtures every test directory shares.

``FLUVIAL_REQUIRE_SERVICES=1`` (set by ``.ci/run``): what a test needs from the
machine (PySpark and Java, PostgreSQL on loopback here) must be present, and its
absence fails instead of skipping.

``FLUVIAL_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``):
the PostgreSQL database the ``postgresql://`` store tests use; each test gets a
schema of its own (a random name), dropped after it.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluvial.errors import MissingDependency

REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"


def spark_or_skip() -> None:
    """Skip the calling test in one line when PySpark or Java is missing (fail when required)."""
    from fluvial.engine.spark.session import require_pyspark

    try:
        require_pyspark()
    except MissingDependency as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def spark_ready() -> None:
    """PySpark and Java are here (else the test skips, or fails under FLUVIAL_REQUIRE_SERVICES=1)."""
    spark_or_skip()


POSTGRES = os.environ.get("FLUVIAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STORE_KINDS = ("sqlite", "postgresql")
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


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` store URL with a fresh schema, dropped after the test."""
    base = postgres_or_skip()
    schema = f"test_{secrets.token_hex(6)}"
    yield f"{base}?schema={schema}"
    drop_schema(schema)


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty view store, once per kind of :data:`STORE_KINDS`."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'views.db'}"
    return str(request.getfixturevalue("postgres_url"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every Spark test ``spark``: `make test` runs them apart, one at a time, after the rest
    (Spark gives a new Python worker a fixed 10 s to connect back, which a busy machine can miss)."""
    for item in items:
        if "spark" in item.nodeid.lower():
            item.add_marker(pytest.mark.spark)
