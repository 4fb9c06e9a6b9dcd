"""``fluvial worker``: one process of a group sharing the speed layer of pipelines, partition by partition."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from fluvial.cli.app import arg, data_dir, subcommand, workspace
from fluvial.cli.run import _ensure_log, _load
from fluvial.config import DEFAULT_STREAM, StreamConfig
from fluvial.errors import ConfigError, StoreUnavailable

_logger = logging.getLogger("fluvial.workers")
STORE_PATIENCE_S = 300.0
"""How long a worker starting while its store cannot be reached retries before it gives up."""

_DESCRIPTION = """\
Run the speed layer of the pipelines of FLOW_FILE together with any number of
other `fluvial worker` processes, on this machine or others that reach the same
--log and --store (use a postgresql:// store and a nats:// log across machines).

The workers share each pipeline's log partitions: each holds a membership
lease and the leases of its fair share of partitions, in the store. When a
worker joins, the others release partitions to it; when one stops, its
partitions are taken at once; when one dies or hangs, they are taken once its
lease (--lease-ms) runs out. Every commit (a partition's view changes and its
checkpoint) is fenced by the partition's lease epoch in the same store
transaction, so a worker paused past its lease never counts an event twice.
Each worker prints the partitions it owns whenever they change.

Only pipelines whose partitions can run apart are accepted: log sources,
narrow operators (map, filter, ...), monoid aggregations written with
to_view(), print/foreach. Per-key state, joins, latest-value views, save_to
and file sinks are refused before start (run those with `fluvial run --mode
stream`). A pipeline is run either by workers or by a single runner, never
both: the second one refuses, naming the first. Batch runs and Kappa
reprocessing (`fluvial run --mode batch`, `fluvial reprocess`, or a server's)
hand over to the workers while they run. After a reprocess with new code (or
a rollback), workers running other code stop and say so: restart them with
the pipeline's current flow file. Serve the views with `fluvial serve
--speed-layer workers`.

Stops cleanly on Ctrl-C / SIGTERM (after the current micro-batch), releasing
its partitions to the others."""


@subcommand(
    "worker",
    summary="share the speed layer of pipelines with other worker processes, partition by partition",
    description=_DESCRIPTION,
    example="fluvial --log nats://10.0.0.5:4222/iot --store 'postgresql://fluvial@10.0.0.6:5432/iot' \\\n"
            "    worker flows/readings.py --pipeline readings --batch-interval-ms 200",
    args=[
        arg("flow_file", metavar="FLOW_FILE", help="a Python file defining fluvial.Pipeline objects"),
        arg("--pipeline", metavar="NAME", action="append", default=None,
            help="serve this pipeline of the flow file (repeatable; default: all of them)"),
        arg("--batch-interval-ms", type=int, default=DEFAULT_STREAM.batch_interval_ms, metavar="N",
            help="time between micro-batches (default: %(default)s)"),
        arg("--max-batch-records", type=int, default=DEFAULT_STREAM.max_batch_records, metavar="N",
            help="at most N log records per partition and micro-batch (default: %(default)s)"),
        arg("--lease-ms", type=int, default=DEFAULT_STREAM.lease_ms, metavar="N",
            help="how long this worker may be silent (paused, cut off) before others take its "
                 "partitions (default: %(default)s)"),
    ],
)
def worker(args: argparse.Namespace) -> int:
    if args.lease_ms <= 0 or args.batch_interval_ms < 0 or args.max_batch_records <= 0:
        raise ConfigError(f"--lease-ms and --max-batch-records must be > 0 and --batch-interval-ms >= 0, "
                          f"got {args.lease_ms}, {args.max_batch_records} and {args.batch_interval_ms}")
    pipelines = _load(args)
    if args.pipeline:
        names = {p.name for p in pipelines}
        unknown = sorted(set(args.pipeline) - names)
        if unknown:
            raise ConfigError(f"--pipeline {', '.join(unknown)}: not in {args.flow_file} "
                              f"(it defines {', '.join(sorted(names)) or 'none'})")
        pipelines = [p for p in pipelines if p.name in set(args.pipeline)]
    if not pipelines:
        raise ConfigError(f"{args.flow_file} defines no fluvial.Pipeline at module level")
    config = StreamConfig(batch_interval_ms=args.batch_interval_ms, max_batch_records=args.max_batch_records,
                          lease_ms=args.lease_ms)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with workspace(args, data_dir(args)) as ws:
            _ensure_log(ws)
            _remember(data_dir(args), Path(args.flow_file), pipelines)
            group = _join(ws, pipelines, config, stop)
            if group is None:
                return 0
            _say(f"worker pid {group.owner.pid}: serving {', '.join(p.name for p in pipelines)} "
                 f"({ws.log.partitions} partitions, lease {args.lease_ms} ms)")
            group.run(stop)
            _say(f"worker pid {group.owner.pid}: stopped after {group.records} records; partitions released")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _join(ws: Any, pipelines: list[Any], config: StreamConfig, stop: threading.Event) -> Any:
    """The worker, once the store can be reached (a store restarting: retry for up to
    STORE_PATIENCE_S); ``None`` if stopped meanwhile."""
    from fluvial.layers.workers import Worker

    deadline = time.monotonic() + STORE_PATIENCE_S
    while True:
        try:
            return Worker(log=ws.log, store=ws.store, pipelines=pipelines, config=config, say=_say)
        except StoreUnavailable as exc:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"{exc} (gave up after {STORE_PATIENCE_S:.0f} s)") from None
            _say(f"worker: {exc}; retrying")
            if stop.wait(1.0):
                return None


def _remember(directory: Path, file: Path, pipelines: list[Any]) -> None:
    """Note the flow file as the code of its pipelines on this data directory, unless another is
    noted for them already: offline ``fluvial reprocess`` and ``rollback`` then know the code the
    workers run (the one a switch replaces, and the one a rollback goes back to)."""
    from fluvial.layers.pipelines import FlowSet

    names = {p.name for p in pipelines}
    try:
        if names & FlowSet.remembered_pipelines(directory):
            return
        FlowSet.load(directory, [(file.resolve(), "lambda", 0.0)]).remember()
    except ConfigError as exc:   # an unreadable record: the offline commands then need --flow
        _logger.warning("worker: cannot note the flow file on %s: %s", directory, exc)


def _say(line: str) -> None:
    """Print a line of the worker's live output, and log it."""
    print(line, flush=True)
    _logger.info("%s", line)
