"""``fluvial run`` and ``fluvial explain``: load the pipelines of a flow file and run them."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from fluvial.cli.app import arg, data_dir, subcommand, workspace
from fluvial.config import DEFAULT_STREAM, StreamConfig
from fluvial.errors import ConfigError, FluvialError, LogError
from fluvial.flow.graph import Node, Pipeline
from fluvial.flowfile import FlowFileError, load_pipelines
from fluvial.workspace import Workspace

_FLOW_HELP = "a Python file defining fluvial.Pipeline objects at module level"


def _reads_log(pipeline: Pipeline) -> bool:
    seen: set[int] = set()
    todo: list[Node] = list(pipeline.sinks)
    while todo:
        node = todo.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        if node.op == "log":
            return True
        todo.extend(node.parents)
    return False


def _ensure_log(ws: Workspace) -> None:
    """Create an empty log when none exists yet, so that readers can open it."""
    if ws.has_log():
        return
    from fluvial.backends import open_log

    try:
        open_log(ws.log_url, config=ws.log_config).close()
    except LogError:
        if not ws.has_log():  # not a writer creating it right now
            raise


def _flow_args() -> list[Any]:
    return [arg("flow_file", metavar="FLOW_FILE", help=_FLOW_HELP)]


ENV_SPARK_MASTER = "FLUVIAL_SPARK_MASTER"


def _engine_args() -> list[Any]:
    return [
        arg("--engine", choices=("local", "spark"), default="local",
            help="local: this machine (default); spark: PySpark (pip install 'fluvial[spark]', Java 17)"),
        arg("--spark-master", metavar="URL", default=None,
            help="spark: the master (local[*] by default; local-cluster[N,cores,mem], spark://host:7077) "
                 f"[env: {ENV_SPARK_MASTER}]"),
        arg("--spark-conf", metavar="KEY=VALUE", action="append", default=None,
            help="spark: a Spark setting passed through as it is (repeatable)"),
    ]


def _spark_config(args: argparse.Namespace) -> Any:
    from fluvial.engine.spark.session import DEFAULT_MASTER, SparkConfig, parse_conf

    master = args.spark_master or os.environ.get(ENV_SPARK_MASTER) or DEFAULT_MASTER
    return SparkConfig(master=master, conf=parse_conf(args.spark_conf))


@subcommand(
    "explain",
    summary="print the lineage of each pipeline of a flow file",
    description="Import FLOW_FILE and print, for each module-level fluvial.Pipeline, its lineage "
                "(like Spark's toDebugString): every sink with the operators it depends on. "
                "With --engine spark, Spark's own lineage (toDebugString) of the RDDs the batch "
                "job compiles to, over the log of the data directory. Nothing is run.",
    example="fluvial explain flows/wordcount.py\nfluvial explain flows/wordcount.py --engine spark",
    args=[*_flow_args(), *_engine_args()],
)
def explain(args: argparse.Namespace) -> int:
    pipelines = _load(args)
    if args.engine == "spark":
        return _explain_spark(pipelines, args)
    for i, pipeline in enumerate(pipelines):
        if i:
            print()
        print(f"pipeline {pipeline.name}:")
        print(pipeline.explain())
    return 0


def _explain_spark(pipelines: list[Pipeline], args: argparse.Namespace) -> int:
    from fluvial.engine.spark.batch import explain_spark

    config = _spark_config(args)
    path = data_dir(args)
    with workspace(args, path) as ws:
        for i, pipeline in enumerate(pipelines):
            log = ws.log if _reads_log(pipeline) and ws.has_log() else None
            if i:
                print()
            print(f"pipeline {pipeline.name} (Spark):")
            print(explain_spark(pipeline, config, log=log))
    return 0


def _load(args: argparse.Namespace) -> list[Pipeline]:
    try:
        return load_pipelines(args.flow_file)
    except FlowFileError as exc:
        if args.debug or args.verbose:
            print(exc.tb, file=sys.stderr, end="")
        raise


_RUN_DESCRIPTION = """\
Import FLOW_FILE (with its directory on sys.path, not as __main__), collect
every fluvial.Pipeline defined at module level, and run each one on the log
and the view store of the data directory.

--mode batch   the batch layer: read the whole log up to now, write every view
               as a new version (name@vN) and switch its alias to it; prints,
               per pipeline, records, seconds, records/s and views written.
--mode stream  the speed layer: process what the log gains in micro-batches
               (exactly-once, restartable) until Ctrl-C / SIGTERM, which stops
               cleanly after the current micro-batch, or, with
               --until-caught-up, until the log holds nothing new.
               With -v, prints one line per micro-batch.

--engine spark runs the batch and the speed layer on PySpark (same views as
--engine local; executors read the log from its URL, file:// or nats://):
--spark-master URL (default local[*], or $FLUVIAL_SPARK_MASTER) and
--spark-conf KEY=VALUE pass-through. The Spark UI address is printed when
the job starts."""


@subcommand(
    "run",
    summary="run the pipelines of a flow file in batch or stream mode",
    description=_RUN_DESCRIPTION,
    example="fluvial run flows/wordcount.py --mode batch\n"
            "fluvial run flows/wordcount.py --mode batch --engine spark --spark-master 'local[4]'\n"
            "fluvial run flows/wordcount.py --mode stream --batch-interval-ms 500 -v",
    args=[
        *_flow_args(),
        arg("--mode", choices=("batch", "stream"), required=True,
            help="batch: recompute views from the whole log; stream: keep them up to date"),
        arg("--until-caught-up", action="store_true",
            help="stream: stop when the log holds nothing new (default: run until Ctrl-C)"),
        arg("--batch-interval-ms", type=int, default=DEFAULT_STREAM.batch_interval_ms,
            metavar="N", help="stream: time between micro-batches (default: %(default)s)"),
        arg("--max-batch-records", type=int, default=DEFAULT_STREAM.max_batch_records,
            metavar="N", help="stream: at most N log records per micro-batch (default: %(default)s)"),
        arg("--take-over", action="store_true",
            help="stream: claim the pipelines even if another runner holds them (that runner's next "
                 "commit is refused and it stops); default: refuse, naming the runner that holds them"),
        arg("--wait", action="store_true",
            help="stream: a standby: if another runner holds a pipeline, wait until it stops (or is "
                 "silent for --lease-ms) and go on from its last checkpoint"),
        arg("--lease-ms", type=int, default=DEFAULT_STREAM.lease_ms, metavar="N",
            help="stream: how long this runner may be silent (paused, cut off) before another may "
                 "claim its pipelines (default: %(default)s)"),
        arg("--workers", type=int, default=None, metavar="N",
            help="batch: worker processes for large inputs (default: the number of CPUs)"),
        arg("--from-export", metavar="DIR", default=None,
            help="batch: read the history from a Parquet export (`fluvial log export --format "
                 "parquet DIR`) instead of the log; both engines"),
        *_engine_args(),
    ],
)
def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.from_export and args.mode != "batch":
        raise ConfigError("--from-export is for --mode batch (the batch layer over the master dataset); "
                          "the speed layer reads the log")
    if args.mode != "stream" and (args.take_over or args.wait):
        raise ConfigError("--take-over and --wait are for --mode stream (batch runs of a pipeline take "
                          "turns by themselves)")
    if args.take_over and args.wait:
        raise ConfigError("--take-over and --wait exclude each other: take the pipelines now, or wait for them")
    if args.lease_ms <= 0:
        raise ConfigError(f"--lease-ms must be > 0, got {args.lease_ms}")
    pipelines = _load(args)
    path = data_dir(args)
    with workspace(args, path) as ws:
        if any(_reads_log(p) for p in pipelines) and not args.from_export:
            _ensure_log(ws)
        if args.mode == "batch":
            return _run_batch(ws, pipelines, args)
    config = StreamConfig(batch_interval_ms=args.batch_interval_ms,
                          max_batch_records=args.max_batch_records, lease_ms=args.lease_ms)
    return _run_stream(path, pipelines, config, args)


def _stream_runner(ws: Workspace, config: StreamConfig, args: argparse.Namespace) -> Any:
    claim = {"take_over": args.take_over, "wait_s": math.inf if args.wait else 0.0}
    if getattr(args, "engine", "local") != "spark":
        return ws.stream_runner(config, **claim)
    try:
        from fluvial.engine.spark.stream import SparkStreamRunner
    except ImportError as exc:
        raise ConfigError(f"--engine spark --mode stream: the Spark stream runner is not available "
                          f"({exc}); use --mode stream --engine local, or --mode batch --engine spark"
                          ) from None
    return SparkStreamRunner(log=ws._lazy_log, store=ws.store, spark=_spark_config(args),
                             batch_interval_ms=config.batch_interval_ms,
                             max_batch_records=config.max_batch_records, lease_ms=config.lease_ms, **claim)


def _run_batch(ws: Workspace, pipelines: list[Pipeline], args: argparse.Namespace) -> int:
    log: Any = ws._lazy_log
    if args.from_export:
        from fluvial.backends import open_log

        log = open_log(f"parquet://{Path(args.from_export).resolve()}", readonly=True)
    if args.engine == "spark":
        from fluvial.engine.spark.batch import SparkBatchRunner

        runner: Any = SparkBatchRunner(log=log, store=ws.store, spark=_spark_config(args))
    else:
        options = {} if args.workers is None else {"workers": args.workers}
        runner = ws.batch_runner(log=log, **options)
    for pipeline in pipelines:
        stats = runner.run(pipeline)
        views = ", ".join(f"{name}@v{version}" for name, version in stats.views.items())
        print(f"{pipeline.name}: {stats.records_in} records in {stats.seconds:.2f} s "
              f"({stats.records_per_s:,.0f} records/s); views: {views or 'none'}")
    return 0


def _run_stream(path: Path, pipelines: list[Pipeline], config: StreamConfig,
                args: argparse.Namespace) -> int:
    stop = threading.Event()
    errors: list[tuple[str, BaseException]] = []

    def work(pipeline: Pipeline) -> None:
        try:
            with workspace(args, path) as ws:  # a store per thread (SQLite connections are)
                _stream_one(_stream_runner(ws, config, args), pipeline, stop, args)
        except BaseException as exc:
            errors.append((pipeline.name, exc))
            stop.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            print("stopping after the current micro-batch...", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = [threading.Thread(target=work, args=(p,), name=f"stream-{p.name}", daemon=True)
                   for p in pipelines]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short waits keep the main thread responsive to signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for name, exc in errors:
        if isinstance(exc, FluvialError) and len(pipelines) > 1:
            raise FluvialError(f"pipeline {name}: {exc}") from exc
        raise exc
    return 0


def _stream_one(runner: Any, pipeline: Pipeline, stop: threading.Event,
                args: argparse.Namespace) -> None:
    if not args.verbose:
        stats = runner.run(pipeline, until_caught_up=args.until_caught_up, stop=stop)
    else:
        stats = _stream_verbose(runner, pipeline, stop, args)
    _say(sys.stdout, f"{pipeline.name}: {stats.micro_batches} micro-batches, "
         f"{stats.records_in} records, {stats.late_events} late, {stats.seconds:.2f} s")


def _stream_verbose(runner: Any, pipeline: Pipeline, stop: threading.Event, args: argparse.Namespace) -> Any:
    """One micro-batch per call, to print a line for each, all under one claim of the pipeline."""
    from fluvial.engine.batch import RunStats

    stats = RunStats(pipeline.name, "stream")
    runner.claim(pipeline, stop=stop)
    try:
        while not stop.is_set():
            s = runner.run(pipeline, until_caught_up=args.until_caught_up, max_batches=1, stop=stop)
            if s.micro_batches == 0:
                if args.until_caught_up:
                    break
                continue
            stats.micro_batches += 1
            stats.records_in += s.records_in
            stats.late_events += s.late_events
            stats.seconds += s.seconds
            _say(sys.stderr, f"{pipeline.name}: micro-batch {stats.micro_batches}: {s.records_in} records, "
                 f"{s.late_events} late, {s.seconds * 1000:.0f} ms")
    finally:
        runner.release()
    return stats


_output = threading.Lock()


def _say(stream: Any, line: str) -> None:
    """Write one whole line (pipelines run in threads: lines must not interleave)."""
    with _output:
        stream.write(line + "\n")
        stream.flush()
