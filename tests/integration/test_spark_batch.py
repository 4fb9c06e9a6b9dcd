"""The Spark batch runner: same rows as the local batch runner, on several executor
processes, and exact when tasks die mid-job (recomputed from the log).

The catalog flows themselves run on Spark in the conformance suite
(``tests/conformance``, runner ``spark-batch``); here: the operators the catalog
does not use, the lineage, the CLI and failing tasks.  An executor killed mid-job on a
real cluster: tests/integration/test_spark_standalone.py.
"""

from __future__ import annotations

import io
import operator
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fluvial import Count, Pipeline, Sum, Tumbling
from fluvial.errors import FlowError
from fluvial.testing import make_events, run_batch, run_on

START_MS = 1_700_000_000_000
EVENTS = make_events(7, 400, devices=5, kinds=["reading", "reading", "status"], start_ms=START_MS,
                     step_ms=300, out_of_order_ms=3_000, duplicate_fraction=0.05)


def _spark(pipeline: Pipeline, tmp_path: Path, master: str = "local[2]"):  # type: ignore[no-untyped-def]
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig

    return run_on(lambda ws, out: SparkBatchRunner(log=ws.log, store=ws.store, spark=SparkConfig(master=master),
                                                   slice_records=64, out=out).run(pipeline),
                  pipeline, EVENTS, tmp_path, partitions=3)


def _local(pipeline: Pipeline, tmp_path: Path):  # type: ignore[no-untyped-def]
    return run_batch(pipeline, EVENTS, tmp_path, partitions=3, slice_records=64)


def _more_operators() -> Pipeline:
    """Operators beyond the catalog: map_partitions, lookup, union, with_timestamps,
    flat_map, views of plain flows, save_to of a plain flow, print, top of a window."""
    p = Pipeline("more")
    readings = p.from_log("reading")
    statuses = p.from_log("status")
    colors = {"red": "warm", "green": "cold"}
    both = readings.union(statuses)
    both.map(lambda e: (e.kind, 1)).reduce_by_key(operator.add).to_view("kinds")
    (readings.map_partitions(lambda es: [(len(list(es)) > 0, 1)])
     .reduce_by_key(operator.add).to_view("partitions_seen"))
    (readings.map(lambda e: (e.payload["color"], e.payload["level"]))
     .lookup(colors, default="other").map(lambda kv: (kv[1][1], kv[1][0]))
     .aggregate_by_key(Sum()).to_view("temperature"))
    (readings.with_timestamps(lambda e: e.ts + 7_000).flat_map(lambda e: [e.device] * e.payload["level"])
     .window(Tumbling(length_ms=15_000)).count_by_value().top(2).to_view("busy"))
    readings.map(lambda e: (e.device, e.payload["value"])).to_view("last_value")
    readings.map(lambda e: (e.device, e.seq)).save_to(None, "last_seq", ["device", "seq"])
    statuses.window(Tumbling(length_ms=60_000)).count().print(3)
    return p


def test_more_operators_equal_local_batch(spark_ready: None, tmp_path: Path) -> None:
    spark = _spark(_more_operators(), tmp_path)
    local = _local(_more_operators(), tmp_path)
    assert spark.views == local.views
    assert spark.tables == local.tables
    assert spark.printed == local.printed
    assert spark.views["kinds"] and spark.views["busy"] and spark.views["last_value"]
    assert spark.stats[0].records_in == local.stats[0].records_in


def test_a_failing_user_function_is_a_flow_error(spark_ready: None, tmp_path: Path) -> None:
    p = Pipeline("bad")
    p.from_log("reading").map(lambda e: (e.device, 1 / 0)).aggregate_by_key(Count()).to_view("bad")
    with pytest.raises(FlowError, match=r"map at .*the user function failed .*ZeroDivisionError"):
        _spark(p, tmp_path)


def test_explain_shows_spark_lineage(spark_ready: None) -> None:
    from fluvial.engine.spark.batch import explain_spark
    from fluvial.engine.spark.session import SparkConfig

    p = Pipeline("wc")
    p.from_queue([["to be or not to be"]]).flat_map(str.split).count_by_value().to_view("wc")
    text = explain_spark(p, SparkConfig(master="local[2]"))
    assert "aggregate at" in text and "PythonRDD" in text and "ParallelCollectionRDD" in text


_SCRIPT = """
import os, sys, operator, tempfile
from pyspark import TaskContext
import fluvial
from fluvial.config import LogConfig
from fluvial.engine.spark.batch import SparkBatchRunner
from fluvial.engine.spark.session import SparkConfig
from fluvial.testing import make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_views

MARKER = sys.argv[2]
HOW = sys.argv[3]

def crash_once(e):
    ctx = TaskContext.get()
    if ctx is not None and ctx.partitionId() == 0 and not os.path.exists(MARKER):
        open(MARKER, "w").close()
        if HOW == "executor":   # the executor JVM: parent of the pyspark daemon, parent of this worker
            with open(f"/proc/{os.getppid()}/stat") as f:
                jvm = int(f.read().rsplit(")", 1)[1].split()[1])
            os.kill(jvm, 9)
        os._exit(1)             # this Python worker: the task fails
    return [e]

events = make_events(11, 600, devices=6, kinds=["reading", "reading", "status"],
                     start_ms=1_700_000_000_000, step_ms=400, out_of_order_ms=3_000,
                     duplicate_fraction=0.05)
p = build_pipeline(CATALOG)
p.from_log("reading").flat_map(crash_once).map(lambda e: (e.device, 1)).reduce_by_key(
    operator.add).to_view("crashed_counts")
expected = expected_views(CATALOG, events, partitions=3, stream=False)
expected["crashed_counts"] = expected_views(CATALOG[:1], events, partitions=3,
                                            stream=False)["counts_by_device"]
with fluvial.open(tempfile.mkdtemp(), writer=True,
                  log_config=LogConfig(partitions=3, fsync="never")) as ws:
    ws.log.append(events)
    conf = {"spark.task.maxFailures": "4"}
    config = SparkConfig(master=sys.argv[1], conf=conf)
    from fluvial.engine.spark.session import get_session
    import time
    sc = get_session(config).sparkContext   # the runner reuses this session
    deadline = time.monotonic() + 60
    while sc._jsc.sc().getExecutorMemoryStatus().size() - 1 < (2 if "cluster" in sys.argv[1] else 0):
        assert time.monotonic() < deadline, "executors did not register"
        time.sleep(0.2)
    print("executors at start", sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
    runner = SparkBatchRunner(log=ws.log, store=ws.store, slice_records=100, spark=config)
    runner.run(p)
    got = read_results(p, ws.store).views
    sc = runner.session.sparkContext
    print("executors", sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
assert os.path.exists(MARKER), "the crash did not happen"
bad = [name for name in expected if got[name] != expected[name]]
assert not bad, f"differ: {bad}"
print("EXACT")
"""


def _executor_stderr() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "work", "app-*", "*", "stderr")


def _run_script(tmp_path: Path, master: str, how: str) -> str:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(script), master, str(tmp_path / "crashed"), how],
                         capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, (out.stdout[-2000:] + out.stderr[-4000:]
                                 + f"\n(executor logs: {_executor_stderr()})")
    assert "EXACT" in out.stdout
    return out.stdout


def test_tasks_failing_on_first_attempt_are_retried_exactly(spark_ready: None, tmp_path: Path) -> None:
    """``local[2,4]``: four failures allowed per task; a Python worker dies in its first task."""
    _run_script(tmp_path, "local[2,4]", "worker")


def test_cli_run_and_explain_on_spark(spark_ready: None, tmp_path: Path) -> None:
    from fluvial.cli.main import main

    flow = tmp_path / "flow.py"
    flow.write_text(textwrap.dedent("""
        import operator, fluvial
        p = fluvial.Pipeline("counts")
        p.from_log("reading").map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view("n")
    """))
    data = tmp_path / "data"
    with __import__("fluvial").open(data, writer=True) as ws:
        ws.log.append(EVENTS)
    args = ["--data-dir", str(data)]
    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        assert main([*args, "run", str(flow), "--mode", "batch", "--engine", "spark",
                     "--spark-master", "local[2]"]) == 0
        assert main([*args, "explain", str(flow), "--engine", "spark"]) == 0
    text = out.getvalue()
    assert "counts:" in text and "n@v1" in text
    assert "aggregate at" in text and "PythonRDD" in text
    with redirect_stdout(io.StringIO()):
        assert main([*args, "query", "n"]) == 0
    assert "Spark" in err.getvalue()
