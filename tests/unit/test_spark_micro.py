"""The executor side of a Spark stream micro-batch (engine/spark/micro.py), without Spark:
a task over hand-made rows reads exactly its range, skips what the store checkpoint has,
reads a gap Spark left from the log, and refuses rows that do not follow each other."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path
from typing import Any

import pytest

from fluvial import Count, Pipeline
from fluvial.backends import open_log, spec_of
from fluvial.config import LogConfig
from fluvial.engine.plan import compile_plan
from fluvial.errors import ConfigError
from fluvial.state.operators import ExecState
from fluvial.testing import make_events

if importlib.util.find_spec("pyspark") is None:  # the imports below need it at collection
    if os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1":
        raise RuntimeError("the Spark stream runner needs PySpark: pip install 'fluvial[spark]'")
    pytest.skip("the Spark stream runner needs PySpark: pip install 'fluvial[spark]'", allow_module_level=True)

from fluvial.engine.spark.micro import _assemble, _task, plan_job
from fluvial.engine.spark.source import _enc

PARTITIONS = 2


@pytest.fixture
def log(tmp_path: Path) -> Any:
    log = open_log(f"file://{tmp_path / 'log'}", config=LogConfig(partitions=PARTITIONS, fsync="never"))
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    log.append(make_events(seed, 200, devices=5, kinds=["reading"], duplicate_fraction=0.0))
    yield log
    log.close()


def _pipeline() -> Pipeline:
    p = Pipeline("micro")
    p.from_log("reading").map(lambda e: (e.device, e)).aggregate_by_key(Count()).to_view("n")
    return p


def _rows(log: Any, partition: int, start: int, stop: int) -> list[tuple[int, int, bytes, int]]:
    """The rows ``run_on_executors`` selects: partition, offset, event, append_ms."""
    batch = log.read(partition, start, stop_offset=stop)
    return [(partition, start + i, _enc.encode(e), a) for i, (e, a) in enumerate(zip(batch.events, batch.append_ms))]


def _job(log: Any, starts: list[int]) -> Any:
    return plan_job(compile_plan(_pipeline()), spec_of(log), starts, ExecState())


def test_a_task_skips_what_is_committed_and_reads_the_gap(log: Any) -> None:
    end = log.end_offsets()[0]
    assert end > 30
    start, first = 10, 20   # committed below 10; Spark's rows start at 20 (replayed below, a gap above)
    rows = _rows(log, 0, 0, 5) + _rows(log, 0, first, end)
    random.shuffle(rows)   # a task sorts its rows by offset
    job = _job(log, [start, 0])
    merged = _assemble(job, list(_reduce(_task(job, rows))))
    assert merged.ends == {0: end} and merged.records == end - start
    brute: dict[str, int] = {}
    for e in log.read(0, start, stop_offset=end).events:
        brute[e.device] = brute.get(e.device, 0) + 1
    (node_id,) = merged.partials
    assert {k: acc for (k, _), acc in merged.partials[node_id].items()} == brute


def test_rows_with_a_hole_are_refused_clearly(log: Any) -> None:
    rows = _rows(log, 1, 0, 10)
    del rows[4]
    with pytest.raises(ConfigError, match=r"log partition 1: Spark gave offset 5, expected 4 \(records of the log "
                                          r"file://.* are missing\)"):
        list(_task(_job(log, [0, 0]), rows))


def test_a_partition_read_by_two_tasks_is_refused(log: Any) -> None:
    job = _job(log, [0, 0])
    first = list(_task(job, _rows(log, 0, 0, 5)))
    second = list(_task(job, [(0, o, b, a) for _, o, b, a in _rows(log, 0, 0, 5)]))
    with pytest.raises(ConfigError, match="log partition 0 was read by 2 Spark tasks in one micro-batch"):
        _assemble(job, list(_reduce(first + second)))


def _reduce(records: Any) -> Any:
    """What reduceByKey does with the records of the tasks (lists concatenated; these tests'
    partials come from one task, or are compared only for their refusal)."""
    out: dict[Any, Any] = {}
    for key, value in records:
        if key in out and value[0] < 0:
            out[key] = (-1, out[key][1] + value[1])
        else:
            out[key] = value
    return out.items()
