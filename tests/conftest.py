"""Fixtures every test directory shares.

``FLUVIAL_REQUIRE_SERVICES=1`` (set by ``.ci/run``): what a test needs from the
machine (PySpark and Java, PostgreSQL on loopback here) must be present, and its
absence fails instead of skipping.

``store_url`` gives a test one empty view store per kind (SQLite, PostgreSQL, Cassandra: see
tests/stores.py, which says which database and how each test gets its own schema or keyspace).
The Cassandra node a run shares is stopped when the last process using it ends its session
(tests/cassandra_node.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cassandra_node import fresh_keyspace_url, release_shared_node
from fluvial.errors import MissingDependency
from logs import LogBackend, delete_streams, make_backend
from stores import STORE_KINDS, fresh_schema_url

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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` store URL with a fresh schema, dropped after the test."""
    with fresh_schema_url() as url:
        yield url


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty view store, once per kind of :data:`STORE_KINDS`."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'views.db'}"
    if request.param == "cassandra":
        return str(request.getfixturevalue("cassandra_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def cassandra_url() -> Iterator[str]:
    """A ``cassandra://`` store URL with a fresh keyspace on the run's node, dropped after the test."""
    with fresh_keyspace_url() as url:
        yield url


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the run's Cassandra node if this process was its last user."""
    release_shared_node()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every Spark test ``spark``: `make test` runs them apart, one at a time, beside the rest
    at a higher CPU priority (Spark gives a new Python worker a fixed 10 s to connect back, which
    a busy machine can miss)."""
    for item in items:
        if "spark" in item.nodeid.lower() or "spark_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(params=["file", "nats"])
def log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogBackend]:
    """Each log backend in turn (tests/logs.py): a file log under tmp_path, a NATS log under a
    fresh NAME (its streams deleted after the test; skips without a NATS server)."""
    backend = make_backend(request.param, tmp_path)
    yield backend
    if backend.name == "nats":
        delete_streams(backend.url)
