"""PostgreSQL restarted under load: stream runners ride it out and the views stay exact.

A PostgreSQL server of the test's own (tests/pgserver.py) holds the views, ``save_to``
tables, checkpoints and leases.  A ``fluvial run --mode stream`` runner (the local one, or
the Spark one with ``--engine spark``) and a standby local rival (``--wait``) run while
events are appended to the log; the server is killed
(SIGKILL of the postmaster and every backend: crash recovery on restart) and later shut
down fast (SIGINT: clients disconnected), each time at a random moment and restarted
after a random pause.  The runner must not exit: it retries from its checkpoint until the
server is back (``StoreUnavailable``), finds out whether a commit whose answer was lost
was kept, and catches up.  Then the views, late counts and tables equal the brute force
over every event of the log, with nothing counted twice.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fluvial
from fluvial import LogConfig
from fluvial.errors import StoreError
from fluvial.serving.postgres import PostgresStore
from fluvial.state.checkpoint import Checkpoint
from fluvial.testing import make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views
from pgserver import PgServer

pytestmark = [pytest.mark.slow, pytest.mark.explicit_backends]

PARTITIONS = 3
NAME = "restarts"
FLOW = f"""from fluvial.testing.catalog import CATALOG, build_pipeline

{NAME} = build_pipeline(CATALOG, name={NAME!r})
"""


def consumed(url: str) -> int | None:
    """Log records the pipeline's checkpoint covers (None while the server is away)."""
    try:
        with PostgresStore(url) as store, store.transaction() as txn:
            blob = txn.get_checkpoint(f"stream:{NAME}")
    except StoreError:
        return None
    return 0 if blob is None else sum(Checkpoint.loads(blob).offsets)


def holder(url: str) -> object:
    """Who holds the pipeline (None before the first claim)."""
    with PostgresStore(url) as store:
        return store.holder(f"stream:{NAME}")


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_postgres_restarts_under_load(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> None:
    if engine == "spark":
        request.getfixturevalue("spark_ready")   # PySpark and Java (else a one-line skip, or a failure if required)
    seed = random.randrange(2**32)
    print(f"seed={seed} engine={engine}")
    rng = random.Random(seed)
    events = make_events(seed, 1_500, devices=16, kinds=["reading", "reading", "status"], step_ms=150,
                         out_of_order_ms=3_000, late_fraction=0.02, late_by_ms=60_000, duplicate_fraction=0.05)
    server = PgServer()
    server.start()
    procs: list[subprocess.Popen[str]] = []
    try:
        url = f"{server.url}?schema=restarts"
        data = tmp_path / "data"
        ws = fluvial.open(data, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
        ws.log.end_offsets()   # created now, with its partitions, before a runner opens it
        flow = tmp_path / "flow.py"
        flow.write_text(FLOW)
        cli = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "--store", url,
               "run", str(flow), "--mode", "stream", "--batch-interval-ms", "20", "--max-batch-records", "60"]
        # the Spark runner (micro-batches on local[2] executors) has a local runner as its standby
        # rival; its micro-batches are larger (each is a Spark job of a second or so: ~6 of them
        # during the ~5 s of appends, where the outages fall)
        spark = ["--engine", "spark", "--spark-master", "local[2]", "--max-batch-records", "250"
                 ] if engine == "spark" else []
        main = subprocess.Popen([*cli, *spark], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(main)
        deadline = time.monotonic() + 180
        while holder(url) is None:   # the runner holds the pipeline: then its rival, a standby
            assert main.poll() is None, main.communicate()[1]
            assert time.monotonic() < deadline, "the runner did not claim its pipeline within 180 s"
            time.sleep(0.05)
        standby = subprocess.Popen([*cli, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(standby)

        appended = threading.Event()

        def append() -> None:
            for i in range(0, len(events), 30):
                ws.log.append(events[i:i + 30])
                time.sleep(0.1)   # ~5 s of appends: the outages fall under load
            appended.set()

        appender = threading.Thread(target=append)
        appender.start()
        deadline = time.monotonic() + 180
        while not consumed(url):   # the runner commits (a Spark runner starts its session first): then the outages
            assert main.poll() is None, main.communicate()[1]
            assert time.monotonic() < deadline, "the runner committed nothing within 180 s"
            time.sleep(0.05)
        outages = []
        for how in ("kill", "stop"):   # a crash, then a fast shutdown
            time.sleep(rng.uniform(0.3, 1.5))
            at = consumed(url)
            server.kill() if how == "kill" else server.stop()
            pause = rng.uniform(0.2, 2.0)
            time.sleep(pause)
            server.start()
            outages.append((how, at, round(pause, 2)))
        appender.join(timeout=120)
        assert appended.is_set()
        size = sum(ws.log.end_offsets())
        deadline = time.monotonic() + 180
        while consumed(url) != size:
            assert main.poll() is None, f"the runner exited: {main.communicate()[1]}"
            assert time.monotonic() < deadline, f"not caught up within 180 s: {consumed(url)} of {size}"
            time.sleep(0.2)
        print(f"outages (how, records consumed before, pause s): {outages}; log: {size} records")
        assert main.poll() is None, f"the runner must ride out the restarts, not exit: {main.communicate()[1]}"
        for proc in (main, standby):
            proc.send_signal(signal.SIGTERM)
        _, err = main.communicate(timeout=120)
        _, standby_err = standby.communicate(timeout=120)
        assert main.returncode == 0, err
        assert standby.returncode == 0 and "Traceback" not in standby_err, standby_err
        assert "answer again" in err, err   # it saw the outages, and said so
        # (Spark logs the failed foreachBatch call of each outage with the Python traceback, at ERROR)
        assert "Traceback" not in err or engine == "spark", err
        with PostgresStore(url) as store:
            got = read_results(build_pipeline(CATALOG, name=NAME), store)
        assert got.views == expected_views(CATALOG, events, partitions=PARTITIONS, stream=True)
        assert got.late == expected_late(CATALOG, events, partitions=PARTITIONS)
        assert got.tables == expected_tables(CATALOG, events, partitions=PARTITIONS, stream=True)
        ws.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        server.close()
