"""HTTP ingest into a log on NATS JetStream with one and with two ``fluvial serve`` nodes,
next to one node on the local file log (the embedded default), same events, same run.

    python bench/ingest_cluster.py [--nats 127.0.0.1:4222] [--events 200000] [--batch 1000]
                                   [--connections 4] [--replicas 1] [--repeat 3]

Sides, each ``--repeat`` times (medians reported), interleaved so that the machine's
load falls on all of them alike:

* ``file, 1 node``: one server on a fresh data directory (its segment-file log);
* ``nats, 1 node``: one server whose log is ``nats://SERVER/NAME`` (a fresh NAME per
  run, its streams deleted after; ``--replicas`` per stream);
* ``nats, 2 nodes``: two servers on the same NATS log (each with its own data directory),
  the load-generator connections split between them, as ``fluvial simulate --url A,B``
  and a load balancer would.

The request bodies (``--events`` readings of 10k devices, JSON arrays of ``--batch``)
are made before the clock starts; ``--connections`` processes post their share on one
keep-alive connection each as fast as the servers answer; events/s = events accepted /
(first request sent -> last response read).  Afterwards the log must hold exactly the
events sent, each once, or the benchmark fails.  Target (issue 10): NATS with R1 at
least the 100k events/s the local log reaches.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from ingest_http import (
    CONTENT_TYPES,
    START_TIMEOUT_S,
    ServeProcess,
    batches,
    encode_bodies,
    make_events,
    post_worker,
    sigterm_as_exit,
)

TARGET_EVENTS_PER_S = 100_000
SIDES = ("file, 1 node", "nats, 1 node", "nats, 2 nodes")


def stored_events(log_url: str | None, data_dir: Path) -> int:
    """Events the log holds, checked to be distinct ``(device, seq)``."""
    from fluvial.backends import open_log

    log = open_log(log_url if log_url else f"file://{data_dir / 'log'}", readonly=True)
    try:
        seen: set[tuple[str, int]] = set()
        n = 0
        for p, end in enumerate(log.end_offsets()):
            offset = log.start_offsets()[p]
            while offset < end:
                batch = log.read(p, offset, max_records=50_000)
                seen.update((e.device, e.seq) for e in batch.events)
                n += len(batch.events)
                offset = batch.next_offset
        if len(seen) != n:
            raise common.ResultMismatch(f"the log holds {n - len(seen):,} events twice")
        return n
    finally:
        log.close()


def delete_streams(log_url: str) -> None:
    sys.path.insert(0, str(common.REPO / "tests"))
    from logs import delete_streams as delete

    delete(log_url)


def one_run(side: str, bodies: list[bytes], n_events: int, args: argparse.Namespace) -> float:
    """Events/s accepted by ``side``, the log checked."""
    nodes = 2 if side.endswith("2 nodes") else 1
    log_url = None
    if side.startswith("nats"):
        query = f"?replicas={args.replicas}" if args.replicas != 1 else ""
        log_url = f"nats://{args.nats}/bench{uuid.uuid4().hex[:10]}{query}"
    env = {"FLUVIAL_LOG": log_url} if log_url else {}
    ctx = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="fluvial-ingest-cluster-"))
    servers: list[ServeProcess] = []
    workers: list[Any] = []
    try:
        for i in range(nodes):
            (workdir / f"node{i}").mkdir()
            servers.append(ServeProcess(workdir / f"node{i}" / "data", env=env).start())
        headers = {"Content-Type": CONTENT_TYPES["json"]}
        barrier = ctx.Barrier(args.connections + 1)
        out = ctx.Queue()
        for c in range(args.connections):
            server = servers[c % nodes]
            workers.append(ctx.Process(target=post_worker, daemon=True,
                                       args=(server.host, server.port, bodies[c::args.connections], headers,
                                             barrier, out)))
        for w in workers:
            w.start()
        barrier.wait(START_TIMEOUT_S)
        results = [out.get(timeout=600) for _ in workers]
        failed = [r["error"] for r in results if not r["ok"]]
        if failed:
            raise RuntimeError(f"{side}: load generator failed: {failed[0]}\n{servers[0].output()}")
        for server in servers:
            server.stop()
        accepted = sum(r["accepted"] for r in results)
        stored = stored_events(log_url, servers[0].data_dir)
        if accepted != n_events or stored != n_events:
            raise common.ResultMismatch(f"{side}: sent {n_events:,}, accepted {accepted:,}, stored {stored:,}")
        seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
        return accepted / seconds
    finally:
        for server in servers:
            server.stop()
        for w in workers:
            if w.is_alive():
                w.kill()
        if log_url:
            delete_streams(log_url)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--nats", default="127.0.0.1:4222", help="the NATS server, HOST:PORT (default 127.0.0.1:4222)")
    ap.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    ap.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    ap.add_argument("--connections", type=int, default=4, help="load-generator processes (default 4)")
    ap.add_argument("--replicas", type=int, default=1, help="replicas of each NATS stream (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; medians reported (default 3)")
    args = ap.parse_args()
    if min(args.events, args.batch, args.connections, args.replicas, args.repeat) < 1:
        raise SystemExit("--events, --batch, --connections, --replicas and --repeat must be >= 1")
    load_before = os.getloadavg()[0]
    events = make_events(args.events)
    bodies = encode_bodies(batches(events, args.batch), "json", False)
    print(f"ingest_cluster: {len(events):,} readings, {args.batch:,} per request, {args.connections} connections, "
          f"NATS at {args.nats} (R{args.replicas}); at {common.git_head()}", flush=True)
    runs: dict[str, list[float]] = {side: [] for side in SIDES}
    with sigterm_as_exit():
        for i in range(args.repeat):
            for side in SIDES:
                started = time.perf_counter()
                eps = one_run(side, bodies, len(events), args)
                runs[side].append(eps)
                print(f"  run {i + 1}/{args.repeat} {side:<14} {eps:>10,.0f} events/s  (log checked; "
                      f"{time.perf_counter() - started:.0f} s with start-up)", flush=True)
    print()
    print(f"== ingest_cluster: median of {args.repeat} runs; {os.cpu_count()} cores, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    base = statistics.median(runs["file, 1 node"])
    for side in SIDES:
        med = statistics.median(runs[side])
        print(f"  {side:<14} {med:>10,.0f} events/s  {med / base:5.2f}x file")
    nats1 = statistics.median(runs["nats, 1 node"])
    print(f"  2 nodes / 1 node on NATS: {statistics.median(runs['nats, 2 nodes']) / nats1:.2f}x; "
          f"target NATS R{args.replicas} >= {TARGET_EVENTS_PER_S:,} events/s: "
          f"{'PASS' if nats1 >= TARGET_EVENTS_PER_S else 'MISS'}")
    common.write_result("ingest_cluster", {"events": len(events), "batch": args.batch,
                                           "connections": args.connections, "replicas": args.replicas,
                                           "runs": runs, "medians": {s: statistics.median(v) for s, v in runs.items()},
                                           "machine": common.machine(), "git": common.git_head()})


if __name__ == "__main__":
    main()
