"""The batch layer over the master dataset: both batch runners read a Parquet export.

    log ──export──► Parquet (kind=/date=) ──► local batch runner ─┐
                                           └─► Spark batch runner ─┴─► same views as over the log
"""

from __future__ import annotations

import operator
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import fluvial as fl
from fluvial.log.parquet import ParquetLog, export_parquet

SEED = random.randrange(2**32)

FLOW = '''
import operator
import fluvial
p = fluvial.Pipeline("per_device")
(p.from_log("reading").map(lambda e: (e.device, 1)).window(fluvial.Tumbling(length_ms=60_000))
 .reduce_by_key(operator.add).to_view("per_device"))
'''


def events(n: int) -> list[fl.Event]:
    rng = random.Random(SEED)
    return [fl.Event(device=f"d{rng.randrange(9)}", kind="reading", ts=1_700_000_000_000 + 700 * i
                     + rng.randrange(-20_000, 20_000), seq=i, payload={"kind": "t", "value": 1.0})
            for i in range(n)]


def brute(evs: list[fl.Event]) -> dict:
    return dict(Counter((e.device, e.ts - e.ts % 60_000) for e in evs))


def rows(store) -> dict:
    return {(r.key, r.window[0]): r.value for r in store.query("per_device")}


def test_both_batch_runners_over_an_export_equal_the_log(tmp_path: Path) -> None:
    print(f"seed={SEED}")
    evs = events(3_000)
    (tmp_path / "flow.py").write_text(FLOW)
    with fl.open(tmp_path / "data", writer=True) as ws:
        ws.log.append(evs)
        report = export_parquet(ws.log, tmp_path / "export")
        assert report.events == len(evs)
    later = events(3_500)[3_000:]          # arrives after the export: not in the batch view
    with fl.open(tmp_path / "data", writer=True) as ws:
        ws.log.append(later)
    cli = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path / "data")]
    out = subprocess.run([*cli, "run", str(tmp_path / "flow.py"), "--mode", "batch",
                          "--from-export", str(tmp_path / "export")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with fl.open(tmp_path / "data") as ws:
        assert rows(ws.store) == brute(evs)
        assert ws.store.view("per_device").cutoff == dict(enumerate(ParquetLog.open(tmp_path / "export")
                                                                    .end_offsets()))
    refused = subprocess.run([*cli, "run", str(tmp_path / "flow.py"), "--mode", "stream",
                              "--from-export", str(tmp_path / "export")],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 1 and "--from-export is for --mode batch" in refused.stderr


@pytest.mark.slow
def test_spark_batch_runner_over_an_export(spark_ready: None, tmp_path: Path) -> None:
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig

    print(f"seed={SEED}")
    evs = events(2_000)
    with fl.open(tmp_path / "data", writer=True) as ws:
        ws.log.append(evs)
        export_parquet(ws.log, tmp_path / "export")
        p = fl.Pipeline("per_device")
        (p.from_log("reading").map(lambda e: (e.device, 1)).window(fl.Tumbling(length_ms=60_000))
         .reduce_by_key(operator.add).to_view("per_device"))
        SparkBatchRunner(log=ParquetLog.open(tmp_path / "export"), store=ws.store,
                         spark=SparkConfig(master="local[2]"), slice_records=300).run(p)
        assert rows(ws.store) == brute(evs)
