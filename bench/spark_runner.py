"""fluvial's Spark runner, side by side with a hand-written PySpark job and the local batch runner.

    python bench/spark_runner.py [--jobs word_count,hashtags,device_stats] [--scale 1.0]
                                 [--repeat 3] [--master local[2]]

For each job (the same data and flows as bench/word_count.py, hashtags.py,
device_stats.py): the local batch runner and fluvial's Spark runner
(``--engine spark``) run the example pipeline over the ingested log; the
hand-written PySpark RDD job reads the generated file.  One SparkSession
serves both Spark sides; its start-up is not counted.  Timed: for fluvial,
``runner.run`` (read the log, compute, write the view as a new batch version in
the store); for the hand-written job, the job up to its ``collect()``.  Reading
fluvial's view back for the check is not timed (as everywhere in bench/).
Every side's result is checked against the plain-Python reference.  Target of issue 4: the Spark
runner's time at most 1.3x the hand-written PySpark job's.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SIZES = {"word_count": 50, "hashtags": 1_000_000, "device_stats": 1_000_000}


def _median_time(repeat: int, run: Any, check: Any) -> float:
    """``run()`` returns (seconds, result): each side times its own job (for fluvial:
    ``runner.run``, which computes and writes the view version; reading the view back
    for the check is not timed, as in ``common.run_fluvial``)."""
    times = []
    for i in range(repeat):
        gc.collect()
        seconds, out = run()
        times.append(seconds)
        check(out)
        print(f"    run {i + 1}/{repeat}: {times[-1]:.3f} s  result checked", flush=True)
    return statistics.median(times)


def bench_job(name: str, args: argparse.Namespace, spark: Any) -> dict[str, Any]:
    import fluvial
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig

    job = importlib.import_module(name).JOB
    size = max(1, int(SIZES[name] * args.scale))
    path = common.dataset(job.gen_kind, size, job.suffix)
    print(f"== {name}: {path.name}", flush=True)
    ref = job.plain(path)
    data_dir = common.DATA / f"fluvial-spark-{name}"
    n, secs = common.ingest(data_dir, job.events(path))
    print(f"  ingest: {n:,} events in {secs:.2f} s (not timed)", flush=True)
    flow, view = job.pipeline()
    out: dict[str, float] = {}

    print("  fluvial local batch", flush=True)
    def local_batch() -> tuple[float, Any]:
        seconds, _, rows = common.run_fluvial(data_dir, flow, view, "batch")
        return seconds, job.from_rows(rows)

    out["fluvial local batch"] = _median_time(
        args.repeat, local_batch, lambda got: common.check_equal("fluvial local batch", got, ref))

    def spark_runner() -> tuple[float, Any]:
        common._reset_store(data_dir)
        with fluvial.open(data_dir) as ws:
            runner = SparkBatchRunner(log=ws.log, store=ws.store, spark=SparkConfig(master=args.master))
            started = time.perf_counter()
            runner.run(flow)
            seconds = time.perf_counter() - started
            return seconds, job.from_rows(ws.store.query(view))

    def hand_written() -> tuple[float, Any]:
        started = time.perf_counter()
        result = job.spark(spark.sparkContext, path)
        return time.perf_counter() - started, result

    print("  fluvial spark runner", flush=True)
    out["fluvial spark runner"] = _median_time(
        args.repeat, spark_runner, lambda got: common.check_equal("fluvial spark runner", got, ref))
    print("  hand-written pyspark", flush=True)
    out["hand-written pyspark"] = _median_time(
        args.repeat, hand_written,
        lambda got: common.check_equal("hand-written pyspark", got, ref, close=job.spark_close))
    hand = out["hand-written pyspark"]
    print(f"  {'side':<22} {'median s':>9} {'x hand-written pyspark':>24}")
    for side, t in out.items():
        print(f"  {side:<22} {t:>9.3f} {t / hand:>24.2f}")
    ratio = out["fluvial spark runner"] / hand
    print(f"  verdict: spark runner {ratio:.2f}x the hand-written job "
          f"({'PASS' if ratio <= 1.3 else 'MISS'} <= 1.3x)", flush=True)
    return {"records": n, "medians_s": out, "spark_runner_overhead": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="word_count,hashtags,device_stats")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full data sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    from fluvial.engine.spark.session import SparkConfig, get_session

    started = time.perf_counter()
    spark = get_session(SparkConfig(master=args.master, conf={"spark.driver.memory": "4g"}), announce=False)
    spark.sparkContext.parallelize([0], 1).count()
    print(f"SparkSession ({args.master}) started in {time.perf_counter() - started:.1f} s (not timed)")
    results = {name: bench_job(name, args, spark) for name in args.jobs.split(",")}
    common.write_result("spark_runner", {"machine": common.machine(), "master": args.master, "jobs": results})


if __name__ == "__main__":
    main()
