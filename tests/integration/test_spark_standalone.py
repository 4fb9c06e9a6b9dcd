"""The Spark runners on a real cluster manager: a Spark standalone master and two workers on
loopback (started from the pyspark package), the log on NATS JetStream, the views in PostgreSQL.

One driver process (one Spark application: the cluster's start-up is paid once) runs the
batch runner, then the stream runner, over the same NATS log, each into its own PostgreSQL
schema, and compares every view, late count and ``save_to`` table with the brute force over
the acknowledged events (seed printed).  Faults:

* batch run: the executor running the first attempt of one task SIGKILLs its own JVM (the
  whole executor is lost); Spark reruns the lost tasks, recomputing them from the log;
* stream run: at a random moment (seeded) the test SIGKILLs an executor JVM of a worker;
  the micro-batch's tasks are retried, the store commit happens once.

The executors open the log from its ``nats://`` URL: the driver's workspace has no log
directory, the workers share no directory with it, and the worker logs show tasks finished
on both workers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from logs import delete_streams, fresh_nats_url, nats_or_skip
from spark_cluster import Cluster, standalone_cluster
from stores import fresh_schema_url

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.usefixtures("spark_ready")]

_DRIVER = """
import json, os, sys, time
from pyspark import TaskContext
from fluvial.backends import open_log, open_store
from fluvial.config import LogConfig
from fluvial.engine.spark.batch import SparkBatchRunner
from fluvial.engine.spark.session import SparkConfig, get_session
from fluvial.engine.spark.stream import SparkStreamRunner
from fluvial.testing import make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views

master, log_url, batch_store, stream_store, seed, mode = sys.argv[1:7]
seed = int(seed)

def kill_own_executor(e):
    # The first attempt of the task of Spark partition 0: this executor's JVM dies.
    ctx = TaskContext.get()
    if ctx is not None and ctx.partitionId() == 0 and ctx.attemptNumber() == 0 and ctx.stageAttemptNumber() == 0:
        with open(f"/proc/{os.getppid()}/stat") as f:   # worker -> pyspark daemon -> executor JVM
            jvm = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(jvm, 9)
        os._exit(1)
    return [e]

events = make_events(seed, 600, devices=6, kinds=["reading", "reading", "status"], start_ms=1_700_000_000_000,
                     step_ms=400, out_of_order_ms=3_000, late_fraction=0.05, late_by_ms=40_000,
                     duplicate_fraction=0.05)
log = open_log(log_url, config=LogConfig(partitions=3))
log.append(events)      # acknowledged: append returned (a second driver's append stores nothing new)
config = SparkConfig(master=master, conf={"spark.task.maxFailures": "8", "spark.ui.enabled": "false"})
sc = get_session(config, announce=False).sparkContext
deadline = time.monotonic() + 90
while sc._jsc.sc().getExecutorMemoryStatus().size() - 1 < 2:
    assert time.monotonic() < deadline, "the two executors did not register"
    time.sleep(0.2)
T0 = time.monotonic()
print("EXECUTORS", sc._jsc.sc().getExecutorMemoryStatus().size() - 1, flush=True)

def check(pipeline, store, stream):
    got = read_results(pipeline, store)
    want = expected_views(CATALOG, events, partitions=3, stream=stream)
    bad = [c.name for c in CATALOG if got[c.name] != want[c.name]]
    if stream:
        late = expected_late(CATALOG, events, partitions=3)
        bad += [f"late {c.name}" for c in CATALOG if got.late[c.name] != late[c.name]]
    if got.tables != expected_tables(CATALOG, events, partitions=3, stream=stream):
        bad.append("tables")
    return bad

def batch():
  p = build_pipeline(CATALOG)
  p.from_log("reading").flat_map(kill_own_executor).map(lambda e: (e.device, 1)).reduce_by_key(
    lambda a, b: a + b).to_view("after_kill")
  store = open_store(batch_store)
  SparkBatchRunner(log=log, store=store, spark=config, slice_records=150).run(p)
  bad = check(p, store, False)
  after = {r.key: r.value for r in read_results(p, store)["after_kill"]}
  brute = {}
  for e in {(e.device, e.seq): e for e in events if e.kind == "reading"}.values():
      brute[e.device] = brute.get(e.device, 0) + 1
  bad += [] if after == brute else ["after_kill"]
  print("BATCH", json.dumps(bad), flush=True)
  print("T", time.monotonic() - T0, flush=True)

if mode == "all":
  batch()
p = build_pipeline(CATALOG)
store = open_store(stream_store)
print("STREAM START", flush=True)
stats = SparkStreamRunner(log=log, store=store, spark=config, batch_interval_ms=0,
                          max_batch_records=120 if mode == "all" else 60).run(p, until_caught_up=True)
print("STREAM", json.dumps(check(p, store, True)), stats.micro_batches, flush=True)
print("T", time.monotonic() - T0, flush=True)
print("LOG", log.spec().url, flush=True)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as c:
        yield c


def _kill_an_executor_later(cluster: Cluster, proc: subprocess.Popen[str], lines: list[str],
                            rng: random.Random, killed: list[int]) -> None:
    """Once the stream run started, after a random delay, SIGKILL an executor JVM of a random worker."""
    while not any(line.startswith("STREAM START") for line in lines):
        if proc.poll() is not None:
            return
        time.sleep(0.05)
    time.sleep(rng.uniform(0.5, 4.0))
    worker = rng.randrange(len(cluster.workers))
    for pid in cluster.executors_of(worker):
        os.kill(pid, 9)
        killed.append(pid)
    # mid-run or not: the test checks the run was still going (no STREAM line yet)
    killed.append(-1 if any(line.startswith("STREAM ") and "START" not in line for line in lines) else 0)


def test_batch_and_stream_on_a_standalone_cluster_with_nats_and_postgresql(
        cluster: Cluster, tmp_path: Path) -> None:
    nats_or_skip()
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER))
    url = fresh_nats_url()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    lines: list[str] = []
    killed: list[int] = []
    err_file = open(tmp_path / "driver.err", "w")  # noqa: SIM115 - closed below
    try:
        with fresh_schema_url() as batch_store, fresh_schema_url() as stream_store:
            proc = subprocess.Popen([sys.executable, str(script), cluster.master_url, url, batch_store,
                                     stream_store, str(seed), "all"], stdout=subprocess.PIPE,
                                    stderr=err_file, text=True, env=env,
                                    cwd=tmp_path)
            killer = threading.Thread(target=_kill_an_executor_later, args=(cluster, proc, lines, rng, killed))
            killer.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.strip())
            proc.wait(300)
            proc.stdout.close()
            killer.join(30)
    finally:
        err_file.close()
        delete_streams(url)
    err = (tmp_path / "driver.err").read_text()
    print("\n".join(lines), f"\nkilled: {killed}")
    assert proc.returncode == 0, "\n".join(lines) + err[-4000:]
    out = {line.split()[0]: line for line in lines}
    assert out["EXECUTORS"] == "EXECUTORS 2"
    assert json.loads(out["BATCH"].split(" ", 1)[1]) == [], out["BATCH"]
    stream = out["STREAM"].split(" ")
    assert json.loads(stream[1]) == [], out["STREAM"]
    assert int(stream[2]) >= 4      # max_batch_records: many micro-batches, the kill falls among them
    assert killed and killed[-1] == 0 and len(killed) >= 2, f"no executor killed mid-run: {killed}"
    assert out["LOG"] == f"LOG {url}"   # executors got the nats:// URL
    assert not list(tmp_path.rglob("log")) and not list(tmp_path.rglob("*.seg")), "a log on disk"
    for worker in range(2):   # both workers' executors ran tasks
        assert cluster.tasks_finished(worker) > 0, f"worker {worker} ran no task"


def _committed_batches(store_url: str) -> int:
    from fluvial.backends import open_store
    from fluvial.state.checkpoint import Checkpoint, checkpoint_id

    store = open_store(store_url)
    try:
        with store.transaction() as txn:
            blob = txn.get_checkpoint(checkpoint_id("catalog"))
        return 0 if blob is None else Checkpoint.loads(blob).micro_batches
    finally:
        store.close()


def test_stream_driver_killed_mid_run_then_restarted_is_exact(cluster: Cluster, tmp_path: Path) -> None:
    """The driver of a stream run (its Python process and its JVM) SIGKILLed at a random moment
    after some micro-batches committed; a new driver goes on from the store checkpoint; every
    view, late count and table equals the brute force over the acknowledged events."""
    nats_or_skip()
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER))
    url = fresh_nats_url()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        with fresh_schema_url() as stream_store:
            args = [sys.executable, str(script), cluster.master_url, url, "-", stream_store, str(seed), "stream"]
            with open(tmp_path / "first.out", "w") as out:
                first = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                         start_new_session=True)
                try:
                    deadline = time.monotonic() + 240
                    while _committed_batches(stream_store) < 1:
                        assert first.poll() is None, (tmp_path / "first.out").read_text()[-3000:]
                        assert time.monotonic() < deadline, "no micro-batch committed"
                        time.sleep(0.1)
                    time.sleep(rng.uniform(0.0, 1.5))
                finally:
                    os.killpg(first.pid, 9)   # the driver and its JVM
                    first.wait(30)
            text = (tmp_path / "first.out").read_text()
            assert "STREAM [" not in text, "the run ended before the kill: nothing was interrupted"
            at_kill = _committed_batches(stream_store)
            second = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
            assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    finally:
        delete_streams(url)
    print(f"micro-batches committed before the kill: {at_kill}")
    result = next(line for line in second.stdout.splitlines() if line.startswith("STREAM ["))
    assert json.loads(result.split(" ")[1]) == [], result
    assert int(result.split(" ")[2]) >= 1   # the second driver had work left
