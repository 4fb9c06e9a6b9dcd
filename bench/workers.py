"""Speed-layer throughput with 1 and 2 ``fluvial worker`` processes sharing a pipeline's partitions.

    python bench/workers.py [--events 300000] [--partitions 8] [--repeat 3] [--max-batch-records 20000]
                            [--store postgresql://postgres@127.0.0.1:5432/test | sqlite]

A file log of ``--partitions`` partitions is filled once with ``--events`` readings
(16 devices' worth per partition).  Then, for 1 and for 2 workers, on a fresh store each
time (a new PostgreSQL schema, dropped after; or a new SQLite file), the workers run the
pipeline below from the start of the log; the rate is measured between 10 % and 90 % of the
log committed (the checkpoints of the partitions, read every 50 ms), so process start-up and
the tail do not count (the workers run to the end all the same).  Prints the median of
``--repeat`` runs per worker count and the ratio 2 workers / 1 worker, and checks that the
views equal a brute force over the log.

The pipeline: per (device, minute) the count, and per colour the sum of the levels (two
monoid views whose rows several workers merge into).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fluvial
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.groups import partition_id
from fluvial.testing import make_events

FLOW = """import fluvial

bench = fluvial.Pipeline("bench")
readings = bench.from_log("reading")
readings.map(lambda e: (e.payload["color"], e.payload["level"])).aggregate_by_key(fluvial.Sum()).to_view("levels")
(readings.map(lambda e: (e.device, 1)).window(fluvial.Tumbling(length_ms=60_000))
    .aggregate_by_key(fluvial.Count()).to_view("per_minute"))
"""


def committed(directory: Path, store: str, partitions: int) -> int:
    total = 0
    with fluvial.open(directory, store=store) as ws, ws.store.transaction() as txn:
        for p in range(partitions):
            blob = txn.get_checkpoint(partition_id("bench", p))
            total += Checkpoint.loads(blob).offsets[0] if blob is not None else 0
    return total


def one_run(directory: Path, flow: Path, store: str, workers: int, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory), "--store", store, "worker",
           str(flow), "--batch-interval-ms", "0", "--max-batch-records", str(args.max_batch_records)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
             for _ in range(workers)]
    low, high = args.events // 10, args.events * 9 // 10
    t_low = t_high = None
    try:
        while True:   # the rate between 10 % and 90 %; then on to the end (the views are checked)
            done = committed(directory, store, args.partitions)
            if done >= args.events:
                break
            now = time.perf_counter()
            if t_low is None and done >= low:
                t_low, at_low = now, done
            if t_high is None and done >= high:
                t_high, at_high = now, done
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit(f"a worker exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    assert t_low is not None and t_high is not None
    return (at_high - at_low) / max(t_high - t_low, 1e-3)


def check_views(directory: Path, store: str, events: list[Any]) -> None:
    levels: Counter[str] = Counter()
    minutes: Counter[tuple[str, tuple[int, int]]] = Counter()
    for e in events:
        if e.kind == "reading":
            levels[e.payload["color"]] += e.payload["level"]
            start = e.ts - e.ts % 60_000
            minutes[(e.device, (start, start + 60_000))] += 1
    with fluvial.open(directory, store=store) as ws:
        deadline = time.monotonic() + 300
        while committed(directory, store, ws.log.partitions) < len(events):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        got_levels = {r.key: r.value for r in ws.store.query("levels")}
        got_minutes = {(r.key, tuple(r.window)): r.value for r in ws.store.query("per_minute")}
    assert got_levels == dict(levels), "levels differ from the brute force"
    assert got_minutes == dict(minutes), "per_minute differs from the brute force"


def fresh_store(kind: str, directory: Path, n: int) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite://{directory / f'views-{n}.db'}", None
    schema = f"bench_{secrets.token_hex(5)}"
    return f"{kind}?schema={schema}", schema


def drop(base: str, schema: str | None) -> None:
    if schema is None:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-batch-records", type=int, default=20_000)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a postgresql:// database (a fresh schema per run), or 'sqlite'")
    args = parser.parse_args()
    seed = 20261201
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.events} events, {args.partitions} partitions, store {args.store.split('?')[0]}; seed={seed}")
    with tempfile.TemporaryDirectory() as tmp:
        directory, flow = Path(tmp) / "data", Path(tmp) / "flow.py"
        flow.write_text(FLOW)
        events = make_events(seed, args.events, devices=16 * args.partitions, kinds=["reading"], step_ms=20)
        with fluvial.open(directory, writer=True,
                          log_config=fluvial.LogConfig(partitions=args.partitions, fsync="never")) as ws:
            for i in range(0, len(events), 10_000):
                ws.log.append(events[i:i + 10_000])
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeat):
            for workers in (1, 2):
                store, schema = fresh_store(args.store, Path(tmp), r * 10 + workers)
                try:
                    rates[workers].append(one_run(directory, flow, store, workers, args))
                    check_views(directory, store, events)
                finally:
                    drop(args.store, schema)
                print(f"  run {r + 1}, {workers} worker(s): {rates[workers][-1]:,.0f} events/s", flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"median speed-layer throughput: 1 worker {one:,.0f} events/s, 2 workers {two:,.0f} events/s; "
          f"ratio {two / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
