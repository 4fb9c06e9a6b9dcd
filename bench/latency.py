"""End-to-end latency of the speed layer: event appended to the log -> visible in a query.

    python bench/latency.py [--rate 50000] [--duration 30] [--interval-ms 20]

Three processes on this machine (loopback only, every loop bounded by the duration):

* a writer appends events to a fresh log at ``--rate`` events/s, in batches
  every 10 ms; the first event of every batch is *marked* (its count key is
  unique) and the writer notes the time just before the append call;
* a stream runner (``batch_interval_ms = --interval-ms``) maintains a counting
  view over the log (``map((key, 1)).reduce_by_key(add).to_view(...)``);
* the probe (this process, its own ``fluvial.open(dir).store``) polls
  ``store.query(view, key=marker)`` every millisecond and notes when each
  marked event first shows.

Latency = first visible - appended (one machine, one monotonic clock).  The
first ``--warmup`` seconds are left out.  Target: p99 < 100 ms at 50k events/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import operator
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

VIEW = "latency_counts"
TARGET_P99_MS = 100.0
BATCH_EVERY_MS = 10
DEVICES = 1_000


def counting_pipeline() -> Any:
    import fluvial

    p = fluvial.Pipeline("latency_counts")
    p.from_log("tick").map(lambda e: (e.payload["k"], 1)).reduce_by_key(operator.add).to_view(VIEW)
    return p


def writer(data_dir: Path, rate: int, seconds: float, fsync: str, ready: Any, go: Any, marks: Any,
           done: Any) -> None:
    """Append ``rate`` events/s for ``seconds``, in batches every 10 ms; report markers."""
    import fluvial
    from fluvial import Event

    per_batch = max(1, rate * BATCH_EVERY_MS // 1000)
    seq = [0] * DEVICES
    with fluvial.open(data_dir, writer=True, log_config=fluvial.LogConfig(fsync=fsync)) as ws:
        log = ws.log
        ready.set()
        go.wait(60)
        start = time.monotonic()
        next_tick = start
        batches = n = behind = 0
        end = start + seconds
        while next_tick < end:
            now = time.monotonic()
            if now < next_tick:
                time.sleep(next_tick - now)
            elif now - next_tick > BATCH_EVERY_MS / 1000:
                behind += 1
            events = []
            ts = int(time.time() * 1000)
            for j in range(per_batch):
                d = (n + j) % DEVICES
                seq[d] += 1
                key = f"m{batches}" if j == 0 else "bulk"
                events.append(Event(device=f"dev-{d:04d}", kind="tick", ts=ts,
                                    seq=seq[d], payload={"k": key}))
            t_ns = time.monotonic_ns()
            log.append(events)
            marks.put((batches, t_ns, time.monotonic_ns() - t_ns))
            n += per_batch
            batches += 1
            next_tick += BATCH_EVERY_MS / 1000
        elapsed = time.monotonic() - start
    done.put({"events": n, "batches": batches, "seconds": elapsed, "late_ticks": behind})


def runner(data_dir: Path, interval_ms: int, stop: Any, ready: Any, out: Any) -> None:
    import fluvial

    with fluvial.open(data_dir) as ws:
        pipeline = counting_pipeline()
        # the view exists before the probe starts querying it
        ws.store.define_view(VIEW, aggregator=fluvial.Reduce(operator.add))
        ready.set()
        stats = ws.stream_runner(fluvial.StreamConfig(batch_interval_ms=interval_ms)).run(pipeline, stop=stop)
    out.put({"micro_batches": stats.micro_batches, "records": stats.records_in, "seconds": stats.seconds})


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=50_000, help="events appended per second (default 50000)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measured load (default 30)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    ap.add_argument("--interval-ms", type=int, default=20, help="stream runner batch interval (default 20 ms)")
    ap.add_argument("--fsync", default="batch", choices=("batch", "interval", "never"),
                    help="the writer's log fsync policy (default: batch, the log's default)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    import fluvial

    data_dir = common.DATA / "fluvial-latency"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    with fluvial.open(data_dir, writer=True) as ws:  # create the log, so that readers can open it
        _ = ws.log.partitions

    ctx = mp.get_context("spawn")
    ready_w, ready_r, go, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    marks, done, runner_out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    seconds = args.warmup + args.duration
    w = ctx.Process(target=writer, args=(data_dir, args.rate, seconds, args.fsync, ready_w, go, marks, done))
    r = ctx.Process(target=runner, args=(data_dir, args.interval_ms, stop, ready_r, runner_out))
    w.start()
    r.start()
    if not (ready_w.wait(60) and ready_r.wait(60)):
        w.kill(), r.kill()
        raise SystemExit("writer or stream runner did not start within 60 s")

    print(f"latency: {args.rate:,} events/s in batches every {BATCH_EVERY_MS} ms (fsync={args.fsync}) for "
          f"{args.warmup:g}+{args.duration:g} s; stream runner batch_interval_ms={args.interval_ms}", flush=True)
    pending: dict[int, int] = {}
    append_ms: dict[int, float] = {}
    latencies: dict[int, float] = {}
    t0 = time.monotonic_ns()
    go.set()
    writer_result = None
    deadline = time.monotonic() + seconds + 60  # bounded: never poll forever
    grace_until = None
    with fluvial.open(data_dir) as ws:
        store = ws.store
        while time.monotonic() < deadline:
            while True:
                try:
                    b, t_ns, dt = marks.get_nowait()
                except Exception:
                    break
                pending[b] = t_ns
                append_ms[b] = dt / 1e6
            for b in sorted(pending)[:64]:
                if store.query(VIEW, key=f"m{b}"):
                    latencies[b] = (time.monotonic_ns() - pending.pop(b)) / 1e6
            if writer_result is None:
                try:
                    writer_result = done.get_nowait()
                    grace_until = time.monotonic() + 5
                except Exception:
                    pass
            if grace_until is not None and (not pending or time.monotonic() > grace_until):
                break
            time.sleep(0.001)
    stop.set()
    r.join(30)
    w.join(30)
    runner_result = runner_out.get(timeout=10) if r.exitcode == 0 else None
    if writer_result is None:
        raise SystemExit("the writer did not finish")

    warm_batches = int(args.warmup * 1000 / BATCH_EVERY_MS)
    measured = sorted(v for b, v in latencies.items() if b >= warm_batches)
    never = sum(1 for b in pending if b >= warm_batches)
    appends = sorted(v for b, v in append_ms.items() if b >= warm_batches)
    achieved = writer_result["events"] / writer_result["seconds"]
    p = {q: percentile(measured, q) for q in (50, 95, 99)}
    ok = never == 0 and p[99] < TARGET_P99_MS and achieved >= 0.95 * args.rate
    print()
    print(f"== latency: appended -> visible in store.query, {len(measured):,} marked events "
          f"over {args.duration:g} s (after {args.warmup:g} s warm-up)")
    print(f"  write rate achieved : {achieved:,.0f} events/s ({writer_result['events']:,} events, "
          f"{writer_result['late_ticks']} of {writer_result['batches']} appends started "
          f"> {BATCH_EVERY_MS} ms behind schedule)")
    print(f"  append call         : p50 {percentile(appends, 50):.2f} ms, p99 {percentile(appends, 99):.2f} ms")
    print(f"  latency             : p50 {p[50]:.1f} ms, p95 {p[95]:.1f} ms, p99 {p[99]:.1f} ms, "
          f"max {measured[-1] if measured else float('nan'):.1f} ms")
    if never:
        print(f"  NOT VISIBLE         : {never} marked events never showed within 5 s after the load")
    if runner_result:
        print(f"  stream runner       : {runner_result['micro_batches']:,} micro-batches, "
              f"{runner_result['records']:,} records")
    if achieved < 0.95 * args.rate:
        print(f"  the writer fell short of {args.rate:,} events/s: the load was lighter than asked")
    print(f"  verdict: {'PASS' if ok else 'MISS'} p99 < {TARGET_P99_MS:g} ms at {args.rate:,} events/s")
    doc = {
        "benchmark": "latency", "rate": args.rate, "achieved_rate": achieved, "duration_s": args.duration,
        "warmup_s": args.warmup, "batch_interval_ms": args.interval_ms, "fsync": args.fsync, "samples": len(measured),
        "never_visible": never, "p50_ms": p[50], "p95_ms": p[95], "p99_ms": p[99],
        "max_ms": measured[-1] if measured else None,
        "mean_ms": statistics.fmean(measured) if measured else None,
        "append_p50_ms": percentile(appends, 50), "append_p99_ms": percentile(appends, 99),
        "writer": writer_result, "runner": runner_result, "target_p99_ms": TARGET_P99_MS,
        "target_met": ok, "machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": (time.monotonic_ns() - t0) / 1e9,
    }
    common.write_result("latency", doc)
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
