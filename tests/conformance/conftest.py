"""The ``runner`` fixture: every conformance test runs on every registered runner.

A runner is registered in :data:`RUNNERS` with how it runs a pipeline over a
list of events and whether it has speed-layer semantics (windowed views
leave out late events and count them).  To add a runner -- the Spark
runners, the edge -- add an entry (skip it with ``pytest.importorskip``
inside ``run`` when its extra is missing): every test below then runs on it
and must give the same rows.

The local runners run on the matrix :data:`LOGS` x :data:`STORES`: logs of
segment files or on NATS JetStream (a fresh log NAME per run, its streams
deleted after: tests/logs.py), views in SQLite, PostgreSQL (a fresh schema
each) or Cassandra (a fresh keyspace each on the run's node: tests/stores.py).
Their names say what is not the default: ``batch``, ``stream-nats``,
``batch-postgresql``, ``stream-nats-postgresql``, ``batch-cassandra``,
``stream-nats-cassandra``.
A runner whose service is out of reach skips in one line (fails under
``FLUVIAL_REQUIRE_SERVICES=1``).  The Spark runners read file logs and write
SQLite (``spark-batch``, ``spark-stream``), and read a NATS log and write
PostgreSQL (``spark-batch-nats-postgresql``, ``spark-stream-nats-postgresql``:
the executors open the NATS log from its URL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cassandra_node import problem_ as cassandra_problem
from fluvial import Event, Pipeline
from fluvial.testing import RunResult, run_batch, run_stream
from logs import REQUIRE_SERVICES, delete_streams, fresh_nats_url, nats_or_skip, nats_problem
from stores import store_url_of

PARTITIONS = 3


def on_nats(run: Callable[[str], RunResult]) -> RunResult:
    """``run(url)`` with a new log on NATS, deleted afterwards."""
    nats_or_skip()
    url = fresh_nats_url()
    try:
        return run(url)
    finally:
        delete_streams(url)


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
        log_only: Reads nothing but the log: it refuses queue, rate and file sources
            before starting (the Spark stream runner).
        make: ``make(workspace)``: the runner itself, over the workspace's log and store
            (what actions are given as ``runner=``).
        appends: The slices ``run`` appends the events in, with a run after each (the first
            slice is history for a stream runner's first start).
    """

    name: str
    run: Callable[[Pipeline, Sequence[Event], Path], RunResult]
    drops_late: bool
    partitions: int = PARTITIONS
    log_only: bool = False
    make: Callable[[Any], Any] | None = None
    appends: int = 1

    @property
    def streams(self) -> bool:
        """A stream runner (the speed-layer semantics go with it)."""
        return self.drops_late

    def run_or_refuse(self, pipeline: Pipeline, tmp_path: Path) -> RunResult | None:
        """Run a pipeline over in-memory sources; a log-only runner must refuse it,
        clearly, before starting (then None)."""
        if self.log_only:
            from fluvial.errors import UnsupportedOperation

            with pytest.raises(UnsupportedOperation, match="reads the fluvial log only"):
                self.run(pipeline, [], tmp_path)
            return None
        return self.run(pipeline, [], tmp_path)


LOGS = ("file", "nats")
"""The logs the local runners run on: segment files, and NATS JetStream (tests/logs.py)."""
STORES = ("sqlite", "postgresql", "cassandra")
"""The view stores the local runners run on (tests/stores.py)."""


def runner_name(kind: str, log: str, store: str) -> str:
    """``batch``, ``stream-nats``, ``batch-postgresql``, ``stream-nats-postgresql``, ...: the
    defaults (files, SQLite) are left out of the name."""
    return "-".join([kind, *([log] if log != "file" else []), *([store] if store != "sqlite" else [])])


def local_runners(log: str, store: str) -> dict[str, Runner]:
    """The local batch and stream runners on a log of kind ``log`` and a store of kind ``store``."""

    def on(run: Callable[..., RunResult], d: Path) -> RunResult:
        with store_url_of(store, d) as store_url:
            if log == "nats":
                return on_nats(lambda log_url: run(store=store_url, log=log_url))
            return run(store=store_url)

    def batch(p: Pipeline, evs: Sequence[Event], d: Path) -> RunResult:
        return on(lambda **urls: run_batch(p, evs, d, partitions=PARTITIONS, **urls), d)

    # Many micro-batches: 5 records each on the embedded backends (25 on the others, whose
    # round trips cost more, and 50 on Cassandra, whose commit is several Paxos rounds: the
    # results do not depend on the cuts, which the embedded runner covers finely), events
    # appended in 3 slices with restarts between.
    per_batch = 5 if (log, store) == ("file", "sqlite") else 50 if store == "cassandra" else 25

    def stream(p: Pipeline, evs: Sequence[Event], d: Path) -> RunResult:
        return on(lambda **urls: run_stream(p, evs, d, partitions=PARTITIONS, max_batch_records=per_batch,
                                            appends=3, **urls), d)

    b, s = runner_name("batch", log, store), runner_name("stream", log, store)
    return {b: Runner(b, batch, drops_late=False, make=lambda ws: ws.batch_runner(workers=1, progress=False)),
            s: Runner(s, stream, drops_late=True, make=lambda ws: ws.stream_runner(), appends=3)}


RUNNERS: dict[str, Runner] = {
    **{name: r for log in LOGS for store in STORES for name, r in local_runners(log, store).items()},
    # Defined below; the lambdas look the functions up when called.
    "spark-batch": Runner("spark-batch", lambda p, evs, d: run_spark_batch(p, evs, d),  # noqa: PLW0108
                          drops_late=False, make=lambda ws: make_spark("spark-batch", ws)),
    # Two appends with a restart between: at least two Structured Streaming micro-batches per flow.
    "spark-stream": Runner("spark-stream", lambda p, evs, d: run_spark_stream(p, evs, d),  # noqa: PLW0108
                           drops_late=True, log_only=True, make=lambda ws: make_spark("spark-stream", ws),
                           appends=2),
    "spark-batch-nats-postgresql": Runner(
        "spark-batch-nats-postgresql", lambda p, evs, d: on_nats(lambda url: _spark_on_postgresql(
            "spark-batch", p, evs, d, url)), drops_late=False, make=lambda ws: make_spark("spark-batch", ws)),
    "spark-stream-nats-postgresql": Runner(
        "spark-stream-nats-postgresql", lambda p, evs, d: on_nats(lambda url: _spark_on_postgresql(
            "spark-stream", p, evs, d, url)), drops_late=True, log_only=True,
        make=lambda ws: make_spark("spark-stream", ws)),
}


def make_spark(kind: str, ws: Any, *, master: str = "local[2]", slice_records: int = 64) -> Any:
    """A Spark runner over a workspace (for actions)."""
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig
    from fluvial.engine.spark.stream import SparkStreamRunner

    config = SparkConfig(master=master)
    if kind == "spark-batch":
        return SparkBatchRunner(log=ws.log, store=ws.store, spark=config, slice_records=slice_records)
    return SparkStreamRunner(log=ws.log, store=ws.store, spark=config, batch_interval_ms=0)


def _spark_run(kind: str, pipeline: Pipeline, events: Sequence[Event], directory: Path, *,
               master: str = "local[2]", slice_records: int = 64, log: str | None = None,
               store: str | None = None, appends: int = 2) -> RunResult:
    """Run on a Spark runner (one SparkSession, ``local[2]``, for the whole test session);
    ``log``, ``store``: URLs of a new log and an empty store (default: in the workspace)."""
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig
    from fluvial.engine.spark.stream import SparkStreamRunner
    from fluvial.testing import run_on

    config = SparkConfig(master=master)
    if kind == "spark-batch":
        return run_on(lambda ws, out: SparkBatchRunner(log=ws.log, store=ws.store, spark=config,
                                                       slice_records=slice_records, out=out).run(pipeline),
                      pipeline, events, directory, partitions=PARTITIONS, log=log, store=store)
    return run_on(lambda ws, out: SparkStreamRunner(log=ws.log, store=ws.store, spark=config,
                                                    batch_interval_ms=0, out=out).run(pipeline, until_caught_up=True),
                  pipeline, events, directory, appends=appends, partitions=PARTITIONS, log=log, store=store)


def _spark_on_postgresql(kind: str, pipeline: Pipeline, events: Sequence[Event], directory: Path,
                         log: str) -> RunResult:
    """A Spark runner over the NATS log at ``log`` with its views in a fresh PostgreSQL schema.
    The stream runner runs once over all the events (the restart between appends, which
    doubles the cost of a Structured Streaming query, is covered by ``spark-stream``)."""
    with store_url_of("postgresql", directory) as store:
        return _spark_run(kind, pipeline, events, directory, log=log, store=store, appends=1)


def run_spark_batch(pipeline: Pipeline, events: Sequence[Event], directory: Path) -> RunResult:
    """The Spark batch runner; small splits, so that each log partition is several Spark partitions."""
    return _spark_run("spark-batch", pipeline, events, directory)


def run_spark_stream(pipeline: Pipeline, events: Sequence[Event], directory: Path) -> RunResult:
    """The Spark Structured Streaming runner, events appended in two slices with a restart."""
    return _spark_run("spark-stream", pipeline, events, directory)


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each registered runner in turn (Spark runners need the ``spark_ready`` fixture)."""
    if request.param.startswith("spark"):
        request.getfixturevalue("spark_ready")
    return RUNNERS[request.param]


EMBEDDED = ("batch", "stream")
"""The local runners on the embedded backends: each reference flow runs on them alone."""


@pytest.fixture(params=EMBEDDED)
def embedded_runner(request: pytest.FixtureRequest) -> Runner:
    """The local batch and stream runners on segment files and SQLite."""
    return RUNNERS[request.param]


@pytest.fixture(params=[name for name in RUNNERS if name not in EMBEDDED])
def other_runner(request: pytest.FixtureRequest) -> Runner:
    """Every other runner in turn: the local ones on NATS, PostgreSQL, Cassandra, and the Spark
    ones (which need PySpark and Java: the ``spark_ready`` fixture)."""
    if request.param.startswith("spark"):
        request.getfixturevalue("spark_ready")
    return RUNNERS[request.param]


COMPARED = ("batch", "stream", "stream-nats-postgresql", "stream-nats-cassandra", "spark-batch", "spark-stream")


@pytest.fixture
def all_runners(request: pytest.FixtureRequest) -> dict[str, Runner]:
    """The runners compared with each other in one test: each engine's batch and stream runners
    on the embedded backends, and the local stream runner on the farthest backends.  (Every
    runner's rows are compared with the brute force in every other test, so equality across all
    of them follows; this test checks it directly where the engines differ most.)"""
    request.getfixturevalue("spark_ready")
    runners = {name: RUNNERS[name] for name in COMPARED}
    if nats_problem() is not None and not REQUIRE_SERVICES:  # compare the others without NATS
        runners = {name: r for name, r in runners.items() if "-nats" not in name}
    if cassandra_problem() is not None and not REQUIRE_SERVICES:  # ... or without Cassandra
        runners = {name: r for name, r in runners.items() if "cassandra" not in name}
    return runners

