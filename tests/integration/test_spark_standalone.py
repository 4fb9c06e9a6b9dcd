"""The Spark runners on a real cluster manager: a Spark standalone master and two workers on
loopback (started from the pyspark package), the log on NATS JetStream, the views in PostgreSQL.

A first driver (one Spark application) runs the batch runner, then the stream runner, over
one NATS log, each into its own PostgreSQL schema; a second driver finishes the stream run.
Faults, each at a moment the test does not choose exactly (seed printed):

* batch run: the executor running the first attempt of one task SIGKILLs its own JVM (the
  whole executor is lost); Spark reruns the lost tasks, recomputing them from the log;
* stream run: once a micro-batch is committed, the test SIGKILLs the executor JVMs of a
  random worker; the run goes on (tasks retried, a micro-batch committed after the loss);
* then, after a random delay, the stream driver itself (Python and JVM) is SIGKILLed and a
  new driver goes on from the store checkpoint.

Every view, late count and ``save_to`` table is compared with the brute force over the
acknowledged events.  The executors open the log from its ``nats://`` URL: the drivers'
directory has no log, the workers share no directory with them, and the worker logs show
tasks finished on both workers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
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
PG, SCHEMA = batch_store.split("?")[0], batch_store.split("schema=")[1]

ONCE = []

def kill_own_executor(e):
    # The first attempt of a task of Spark partition 0 kills this executor's JVM, once in the
    # whole run: the marker is a row in PostgreSQL (the executors share no directory).
    ctx = TaskContext.get()
    if ONCE or ctx is None or ctx.partitionId() != 0 or ctx.attemptNumber() != 0:
        return [e]
    ONCE.append(1)
    import psycopg
    with psycopg.connect(PG, autocommit=True) as conn:
        first = conn.execute(f'INSERT INTO "{SCHEMA}".kill_once VALUES (1) ON CONFLICT DO NOTHING').rowcount
    if first == 1:
        with open(f"/proc/{os.getppid()}/stat") as f:   # worker -> pyspark daemon -> executor JVM
            jvm = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(jvm, 9)
        os._exit(1)
    return [e]

events = make_events(seed, 480, devices=6, kinds=["reading", "reading", "status"], start_ms=1_700_000_000_000,
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
  store = open_store(batch_store)   # creates the schema
  import psycopg
  with psycopg.connect(PG, autocommit=True) as conn:
      conn.execute(f'CREATE TABLE "{SCHEMA}".kill_once (k int PRIMARY KEY)')
  SparkBatchRunner(log=log, store=store, spark=config, slice_records=150).run(p)
  with psycopg.connect(PG, autocommit=True) as conn:
      print("EXECUTOR KILLS", conn.execute(f'SELECT count(*) FROM "{SCHEMA}".kill_once').fetchone()[0], flush=True)
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
                          max_batch_records=60 if mode == "all" else 240).run(p, until_caught_up=True)
print("STREAM", json.dumps(check(p, store, True)), stats.micro_batches, flush=True)
print("T", time.monotonic() - T0, flush=True)
print("LOG", log.spec().url, flush=True)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as c:
        yield c


def _wait(what: str, done: Any, driver: subprocess.Popen[bytes], output: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert driver.poll() is None, f"the driver ended before {what}: {output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s: {output.read_text()[-3000:]}"
        time.sleep(0.2)


def _line(text: str, tag: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(tag))


def test_spark_runners_on_a_standalone_cluster_survive_executor_and_driver_kills(
        cluster: Cluster, tmp_path: Path) -> None:
    from fluvial.backends import open_store
    from fluvial.state.checkpoint import checkpoint_id

    nats_or_skip()
    seed = random.randrange(1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER))
    url = fresh_nats_url()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    first_out = tmp_path / "first.out"
    try:
        with fresh_schema_url() as batch_store, fresh_schema_url() as stream_store:
            args = [sys.executable, str(script), cluster.master_url, url, batch_store, stream_store, str(seed)]
            store = open_store(stream_store)
            token = lambda: store.checkpoint_token(checkpoint_id("catalog"))  # noqa: E731
            with open(first_out, "wb") as out:
                first = subprocess.Popen([*args, "all"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=tmp_path, start_new_session=True)
                try:
                    _wait("stream micro-batch", lambda: token() is not None, first, first_out)
                    worker = rng.randrange(len(cluster.workers))
                    killed = cluster.executors_of(worker)
                    for pid in killed:
                        os.kill(pid, 9)
                    at_loss = token()
                    _wait("micro-batch after the executor loss", lambda: token() != at_loss, first, first_out)
                    time.sleep(rng.uniform(0.0, 1.0))
                finally:
                    os.killpg(first.pid, 9)   # the driver and its JVM
                    first.wait(30)
            text = first_out.read_text()
            assert "STREAM [" not in text, "the stream run ended before the driver was killed"
            second = subprocess.run([*args, "stream"], capture_output=True, text=True, env=env, cwd=tmp_path,
                                    timeout=300)
            assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
            store.close()
    finally:
        delete_streams(url)
    print(text, second.stdout, f"executors killed on worker {worker}: {killed}", sep="\n")
    assert killed, f"worker {worker} ran no executor"
    assert _line(text, "EXECUTORS") == "EXECUTORS 2"
    assert _line(text, "EXECUTOR KILLS") == "EXECUTOR KILLS 1"   # in the batch run, by its own task
    assert "Lost executor" in text   # the driver saw it (and, in the stream run, the test's kill)
    assert json.loads(_line(text, "BATCH").split(" ", 1)[1]) == [], _line(text, "BATCH")
    stream = _line(second.stdout, "STREAM [").split(" ")
    assert json.loads(stream[1]) == [], stream
    assert int(stream[2]) >= 1   # the second driver had work left
    assert _line(second.stdout, "LOG") == f"LOG {url}"   # executors got the nats:// URL
    assert not list(tmp_path.rglob("*.seg")) and not (tmp_path / "log").exists(), "a log on disk"
    for w in range(2):   # both workers' executors ran tasks
        assert cluster.tasks_finished(w) > 0, f"worker {w} ran no task"
