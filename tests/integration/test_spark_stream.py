"""The Spark stream runner (Structured Streaming over the fluvial log source).

Its views must equal the local stream runner's and brute force; a stopped and
restarted run must end where an uninterrupted one does; a replayed Spark
batch has no effect twice; what it cannot run is refused before it starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluvial import Pipeline
from fluvial.config import LogConfig
from fluvial.errors import ConfigError, UnsupportedOperation
from fluvial.testing import make_events, read_results, run_stream
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views
from fluvial.workspace import Workspace

pytestmark = pytest.mark.usefixtures("spark_ready")
if importlib.util.find_spec("pyspark") is None:  # the imports below need it at collection
    if os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1":
        raise RuntimeError("the Spark stream runner needs PySpark: pip install 'fluvial[spark]'")
    pytest.skip("the Spark stream runner needs PySpark: pip install 'fluvial[spark]'", allow_module_level=True)

from fluvial.engine.spark.session import SparkConfig, get_session  # noqa: E402
from fluvial.engine.spark.stream import SparkStreamRunner  # noqa: E402

PARTITIONS = 3
MASTER = "local[2]"
EVENTS = make_events(202, 300, devices=6, kinds=["reading", "reading", "status"], start_ms=1_700_000_000_000,
                     step_ms=500, out_of_order_ms=4_000, late_fraction=0.05, late_by_ms=40_000,
                     duplicate_fraction=0.1)


def _slice(i: int, n: int = 3) -> list[Any]:
    size = -(-len(EVENTS) // n)
    return list(EVENTS[i * size:(i + 1) * size])


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One SparkSession for the module (Structured Streaming queries come and go on it)."""
    yield get_session(SparkConfig(master=MASTER), announce=False)


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path / "data", writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
    yield w
    w.close()


def _runner(ws: Workspace, **options: Any) -> SparkStreamRunner:
    options.setdefault("batch_interval_ms", 0)
    options.setdefault("max_batch_records", 90)
    return SparkStreamRunner(log=ws.log, store=ws.store, spark=SparkConfig(master=MASTER), **options)


def _check(result: Any, reference: Any) -> None:
    expected = expected_views(CATALOG, EVENTS, partitions=PARTITIONS, stream=True)
    late = expected_late(CATALOG, EVENTS, partitions=PARTITIONS)
    for case in CATALOG:
        assert result[case.name] == reference[case.name], case.name
        assert result[case.name] == expected[case.name], case.name
        assert result.late[case.name] == reference.late[case.name] == late[case.name], case.name
    assert result.tables == reference.tables
    assert result.tables == expected_tables(CATALOG, EVENTS, partitions=PARTITIONS, stream=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The local stream runner's rows for the catalog over EVENTS."""
    return run_stream(build_pipeline(CATALOG), EVENTS, tmp_path_factory.mktemp("local"), partitions=PARTITIONS,
                      max_batch_records=90, appends=3)


def test_catalog_in_slices_equals_local_runner_and_brute_force(spark: Any, ws: Workspace,
                                                               local_reference: Any) -> None:
    pipeline = build_pipeline(CATALOG)
    batches = 0
    for i in range(3):  # appended in slices, a new runner (a restart) after each
        ws.log.append(_slice(i))
        stats = _runner(ws).run(pipeline, until_caught_up=True)
        assert stats.mode == "spark-stream" and stats.micro_batches >= 1
        batches += stats.micro_batches
    assert batches >= 4  # max_batch_records bounds the micro-batches
    _check(read_results(pipeline, ws.store), local_reference)
    assert (Path(ws.path) / "spark-checkpoints").is_dir()


def test_events_appended_while_running(spark: Any, ws: Workspace, local_reference: Any) -> None:
    pipeline = build_pipeline(CATALOG)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:  # a store connection per thread (sqlite)
        from fluvial.serving.sqlite import SqliteStore

        store = SqliteStore(Path(ws.path) / "views.db")
        try:
            SparkStreamRunner(log=ws.log, store=store, spark=SparkConfig(master=MASTER), batch_interval_ms=50,
                              max_batch_records=90).run(pipeline, stop=stop)
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        for i in range(3):
            ws.log.append(_slice(i))
            time.sleep(0.3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not failure:
            if _caught_up(ws, pipeline):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
    assert not failure, failure
    assert not thread.is_alive()
    _check(read_results(pipeline, ws.store), local_reference)


def _caught_up(ws: Workspace, pipeline: Pipeline) -> bool:
    from fluvial.state.checkpoint import Checkpoint, checkpoint_id

    with ws.store.transaction() as txn:
        blob = txn.get_checkpoint(checkpoint_id(pipeline.name))
    return blob is not None and Checkpoint.loads(blob).offsets == ws.log.end_offsets()


def test_restart_after_some_micro_batches_ends_like_an_uninterrupted_run(
        spark: Any, ws: Workspace, local_reference: Any) -> None:
    pipeline = build_pipeline(CATALOG)
    ws.log.append(list(EVENTS))
    first = _runner(ws, max_batch_records=30).run(pipeline, max_batches=2)
    assert first.micro_batches == 2
    assert first.records_in <= 60
    assert not _caught_up(ws, pipeline)
    second = _runner(ws, max_batch_records=30).run(pipeline, until_caught_up=True)
    assert first.records_in + second.records_in == sum(ws.log.end_offsets())
    _check(read_results(pipeline, ws.store), local_reference)


def test_a_replayed_spark_batch_has_no_effect_twice(spark: Any, ws: Workspace, local_reference: Any) -> None:
    pipeline = build_pipeline(CATALOG)
    ws.log.append(list(EVENTS))
    _runner(ws).run(pipeline, until_caught_up=True)
    # A crash after the store commit, before Spark recorded its batch as done:
    # the restarted query replays that batch, whose records the store already has.
    commits = sorted((Path(ws.path) / "spark-checkpoints").glob("*/commits/[0-9]*"), key=lambda f: int(f.name))
    assert commits
    commits[-1].unlink()
    (commits[-1].parent / f".{commits[-1].name}.crc").unlink(missing_ok=True)  # Hadoop's checksum file
    stats = _runner(ws).run(pipeline, until_caught_up=True)
    assert stats.records_in == 0
    _check(read_results(pipeline, ws.store), local_reference)
    # Spark's checkpoint lost altogether: it starts again where the store checkpoint says.
    shutil.rmtree(Path(ws.path) / "spark-checkpoints")
    assert _runner(ws).run(pipeline, until_caught_up=True).records_in == 0
    _check(read_results(pipeline, ws.store), local_reference)


def test_unsupported_sources_are_refused_before_starting(ws: Workspace, tmp_path: Path) -> None:
    # No Spark session needed: the refusal comes first.
    p = Pipeline("queued")
    p.from_queue([[1, 2], [3]]).map(lambda x: (x, 1)).reduce_by_key(lambda a, b: a + b).to_view("q")
    with pytest.raises(UnsupportedOperation, match=r"queue source at .*test_spark_stream\.py:\d+.*log only"):
        _runner(ws).run(p, until_caught_up=True)
    path = tmp_path / "lines.txt"
    path.write_text("a\nb\n")
    p = Pipeline("text")
    p.from_log("reading").map(lambda e: (e.device, 1)).reduce_by_key(lambda a, b: a + b).to_view("n")
    p.text_file(path).map(lambda s: (s, 1)).reduce_by_key(lambda a, b: a + b).to_view("words")
    with pytest.raises(UnsupportedOperation, match=r"text source at .*test_spark_stream\.py:\d+"):
        _runner(ws).run(p, until_caught_up=True)
    assert not (Path(ws.path) / "spark-checkpoints").exists()


def test_a_query_whose_python_worker_could_not_start_is_restarted_from_the_checkpoint(
        spark: Any, ws: Workspace, local_reference: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark gives a Python worker 10 s to connect back: on a busy machine the query fails at start.
    The runner restarts it from the store's checkpoint (twice at most); other failures are raised."""
    real = SparkStreamRunner._run_query
    failures = iter([RuntimeError("Python worker failed to connect back.")])

    def flaky(self: SparkStreamRunner, *args: Any) -> Any:
        failure = next(failures, None)
        return failure if failure is not None else real(self, *args)

    monkeypatch.setattr(SparkStreamRunner, "_run_query", flaky)
    pipeline = build_pipeline(CATALOG)
    ws.log.append(EVENTS)
    stats = _runner(ws).run(pipeline, until_caught_up=True)
    assert stats.micro_batches > 0
    _check(read_results(pipeline, ws.store), local_reference)

    monkeypatch.setattr(SparkStreamRunner, "_run_query", lambda self, *a: RuntimeError("boom"))
    with pytest.raises(ConfigError, match="the Spark streaming query failed: boom"):
        _runner(ws).run(build_pipeline(CATALOG), until_caught_up=True)
