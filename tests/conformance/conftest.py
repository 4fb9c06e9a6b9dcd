"""The ``runner`` fixture: every conformance test runs on every registered runner.

A runner is registered in :data:`RUNNERS` with how it runs a pipeline over a
list of events and whether it has speed-layer semantics (windowed views
leave out late events and count them).  To add a runner -- the Spark
runners, the edge -- add an entry (skip it with ``pytest.importorskip``
inside ``run`` when its extra is missing): every test below then runs on it
and must give the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluvial import Event, Pipeline
from fluvial.testing import RunResult, run_batch, run_stream

PARTITIONS = 3


@dataclass(frozen=True)
class Runner:
    """How the conformance suite drives one runner.

    Attributes:
        name: The pytest id.
        run: ``run(pipeline, events, directory)``: append the events to a new
            log under ``directory``, run the pipeline to completion, return the rows.
        drops_late: Speed-layer semantics: windowed views hold the on-time
            events only and count the late ones.
        partitions: Partitions of the logs it creates (lateness is per partition).
    """

    name: str
    run: Callable[[Pipeline, Sequence[Event], Path], RunResult]
    drops_late: bool
    partitions: int = PARTITIONS


RUNNERS: dict[str, Runner] = {
    "batch": Runner("batch", lambda p, evs, d: run_batch(p, evs, d, partitions=PARTITIONS), drops_late=False),
    # Many micro-batches: 5 records each, events appended in 3 slices with restarts between.
    "stream": Runner("stream", lambda p, evs, d: run_stream(p, evs, d, partitions=PARTITIONS,
                                                          max_batch_records=5, appends=3),
                     drops_late=True),
    "spark-batch": Runner("spark-batch", run_spark_batch, drops_late=False),
}


def run_spark_batch(pipeline: Pipeline, events: Sequence[Event], directory: Path, *,
                    master: str = "local[2]", slice_records: int = 64) -> RunResult:
    """The Spark batch runner (one SparkSession, ``local[2]``, for the whole test session);
    small splits, so that each log partition is several Spark partitions."""
    import io
    import os
    import shutil
    import tempfile

    from fluvial.config import LogConfig
    from fluvial.errors import MissingDependency
    from fluvial.testing import read_results
    from fluvial.workspace import Workspace

    try:
        from fluvial.engine.spark.batch import SparkBatchRunner
        from fluvial.engine.spark.session import SparkConfig, require_pyspark

        require_pyspark()
    except MissingDependency as exc:
        if os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(str(exc))
    ws = Workspace(tempfile.mkdtemp(prefix="spark-batch-", dir=directory), writer=True,
                   log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
    out = io.StringIO()
    try:
        if events:
            ws.log.append(list(events))
        runner = SparkBatchRunner(log=ws.log, store=ws.store, spark=SparkConfig(master=master),
                                  slice_records=slice_records, out=out)
        stats = runner.run(pipeline)
        result = read_results(pipeline, ws.store)
        result.stats.append(stats)
        result.printed = out.getvalue()
        return result
    finally:
        ws.close()
        shutil.rmtree(ws.path, ignore_errors=True)


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each registered runner in turn."""
    return RUNNERS[request.param]


@pytest.fixture
def all_runners() -> dict[str, Runner]:
    """Every registered runner at once (to compare them with each other)."""
    return dict(RUNNERS)
