"""Fixtures every test directory shares.

``FLUVIAL_REQUIRE_SERVICES=1`` (set by ``.ci/run``): what a test needs from the
machine (PySpark and Java here) must be present, and its absence fails instead
of skipping.
"""

from __future__ import annotations

import os

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every Spark test ``spark``: `make test` runs them apart, one at a time, after the rest
    (Spark gives a new Python worker a fixed 10 s to connect back, which a busy machine can miss)."""
    for item in items:
        if "spark" in item.nodeid.lower():
            item.add_marker(pytest.mark.spark)
