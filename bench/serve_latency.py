"""End-to-end latency of ``fluvial serve``: POST /v1/events sent -> visible in GET /v1/views/device_stats.

    python bench/serve_latency.py [--rate 2000] [--seconds 20] [--batch-interval-ms 200]
                                  [--probes-per-s 20] [--poll-ms 20] [--with-hashtags]

Per batch interval (``--batch-interval-ms 20,200,1000`` runs one after the other):

* a fresh ``fluvial serve`` child process on a free loopback port runs
  ``examples/device_stats.py`` (and ``examples/hashtag_top10.py`` with
  ``--with-hashtags``, then a quarter of the events are tweets) in its speed
  layer with that batch interval; no batch-layer runs;
* a sender process posts ``--rate`` events/s of kind ``reading`` in one
  request every 10 ms (event time = now, so nothing is late), on one
  keep-alive connection; ``--probes-per-s`` of those requests carry one
  *probe* event whose device id is used by no other event, so its
  ``device_stats`` key ``[device, "latency"]`` shows up in the view only once
  the speed layer has processed it; the sender notes the time just before
  sending that request;
* the poller (this process, its own keep-alive connection) asks
  ``GET /v1/views/device_stats?key=[device,"latency"]`` for every pending
  probe every ``--poll-ms``, once its request was answered, and notes when the
  row is first there (the time the answer arrived: an upper bound).

Latency = visible - sent (one machine, one monotonic clock); the first
``--warmup`` seconds are left out.  The resolution is ``--poll-ms`` plus a
query round trip (both reported).  Target: p99 < 1 s at a 200 ms batch interval.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from ingest_http import START_TIMEOUT_S, ServeProcess, percentile, sigterm_as_exit

VIEW = "device_stats"
TARGET_P99_MS = 1000.0
TARGET_INTERVAL_MS = 200
REQUEST_EVERY_MS = 10
DEVICES = 1_000
READING_KINDS = ("temp", "humidity", "battery")
PROBE_KIND = "latency"
HASHTAGS = ("#iot", "#edge", "#fluvial", "#lambda", "#kappa", "#sensor", "#stream", "#batch")
GRACE_S = 10.0


def probe_device(run: int, i: int) -> str:
    return f"probe-{run}-{i:06d}"


def sender(host: str, port: int, run: int, rate: int, seconds: float, probes_per_s: float, tweets: bool,
           barrier: Any, marks: Any, done: Any) -> None:
    """Post ``rate`` events/s, one request every 10 ms, for ``seconds``; report each probe's times."""
    import random

    import msgspec

    from fluvial import Event

    rng = random.Random(run)
    per_request = max(1, round(rate * REQUEST_EVERY_MS / 1000))
    probe_every = max(1, round(1000 / REQUEST_EVERY_MS / probes_per_s))
    seqs = [0] * DEVICES
    encode = msgspec.json.encode
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, port, timeout=60)
    sent = requests = late_ticks = probes = 0
    ack_ms: list[float] = []
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        barrier.wait(START_TIMEOUT_S)
        start = time.monotonic()
        next_tick = start
        end = start + seconds
        while next_tick < end:
            now = time.monotonic()
            if now < next_tick:
                time.sleep(next_tick - now)
            elif now - next_tick > REQUEST_EVERY_MS / 1000:
                late_ticks += 1
            ts = time.time_ns() // 1_000_000
            events = []
            for _ in range(per_request):
                d = rng.randrange(DEVICES)
                seqs[d] += 1
                if tweets and rng.random() < 0.25:
                    text = f"reading from dev-{d:04d} {rng.choice(HASHTAGS)} {rng.choice(HASHTAGS)}"
                    events.append(Event(device=f"dev-{d:04d}", kind="tweet", ts=ts, seq=seqs[d],
                                        payload={"user": f"dev-{d:04d}", "text": text}))
                else:
                    events.append(Event(device=f"dev-{d:04d}", kind="reading", ts=ts, seq=seqs[d],
                                        payload={"kind": rng.choice(READING_KINDS),
                                                 "value": round(rng.gauss(20, 5), 3)}))
            probe = None
            if requests % probe_every == 0:
                probe = probes
                events[0] = Event(device=probe_device(run, probe), kind="reading", ts=ts, seq=0,
                                  payload={"kind": PROBE_KIND, "value": float(probe)})
                probes += 1
            body = encode(events)
            t_send = time.monotonic_ns()
            conn.request("POST", "/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            t_ack = time.monotonic_ns()
            if response.status != 200:
                raise RuntimeError(f"POST /v1/events answered {response.status}: {data[:300]!r}")
            accepted = json.loads(data)["accepted"]
            if accepted != len(events):
                raise RuntimeError(f"the server accepted {accepted} of {len(events)} events")
            ack_ms.append((t_ack - t_send) / 1e6)
            if probe is not None:
                marks.put((probe, t_send, t_ack))
            sent += len(events)
            requests += 1
            next_tick += REQUEST_EVERY_MS / 1000
        done.put({"ok": True, "events": sent, "requests": requests, "probes": probes,
                  "seconds": time.monotonic() - start, "late_ticks": late_ticks,
                  "ack_p50_ms": percentile(ack_ms, 50), "ack_p99_ms": percentile(ack_ms, 99)})
    except BaseException as exc:
        done.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        conn.close()


class Poller:
    """Asks the view for each pending probe's key until its row is there."""

    def __init__(self, host: str, port: int, run: int, poll_ms: float) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.run = run
        self.poll_ns = int(poll_ms * 1e6)
        self.pending: dict[int, list[int]] = {}   # probe -> [sent_ns, acked_ns, next poll ns, polls]
        self.seen: dict[int, tuple[int, int, int, int]] = {}  # probe -> (sent, acked, visible, polls)
        self.queries = 0
        self.query_ms: list[float] = []

    def add(self, probe: int, sent_ns: int, acked_ns: int) -> None:
        self.pending[probe] = [sent_ns, acked_ns, acked_ns, 0]

    @property
    def known(self) -> int:
        return len(self.pending) + len(self.seen)

    def visible(self, probe: int) -> bool:
        key = urllib.parse.quote(json.dumps([probe_device(self.run, probe), PROBE_KIND]))
        t = time.monotonic_ns()
        self.conn.request("GET", f"/v1/views/{VIEW}?key={key}")
        response = self.conn.getresponse()
        data = response.read()
        self.query_ms.append((time.monotonic_ns() - t) / 1e6)
        self.queries += 1
        if response.status != 200:
            raise RuntimeError(f"GET /v1/views/{VIEW} answered {response.status}: {data[:300]!r}")
        return bool(json.loads(data)["rows"])

    def step(self) -> None:
        """Poll every probe that is due (oldest first); sleep a little if none was."""
        now = time.monotonic_ns()
        due = [p for p, (_, _, next_ns, _) in sorted(self.pending.items()) if next_ns <= now]
        for probe in due:
            entry = self.pending[probe]
            entry[3] += 1
            if self.visible(probe):
                sent, acked, _, polls = self.pending.pop(probe)
                self.seen[probe] = (sent, acked, time.monotonic_ns(), polls)
            else:
                entry[2] = time.monotonic_ns() + self.poll_ns
        if not due:
            time.sleep(0.001)

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def backends(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The environment naming the server's log and store: ``--log``/``--store`` with ``{run}``
    replaced by a fresh name (NATS streams and PostgreSQL schemas are removed afterwards)."""
    name = f"lat{uuid.uuid4().hex[:10]}"
    env = {}
    if args.log:
        env["FLUVIAL_LOG"] = args.log.replace("{run}", name)
    if args.store:
        env["FLUVIAL_STORE"] = args.store.replace("{run}", name)
    try:
        yield env
    finally:
        sys.path.insert(0, str(common.REPO / "tests"))
        if env.get("FLUVIAL_LOG", "").startswith("nats://"):
            from logs import delete_streams

            delete_streams(env["FLUVIAL_LOG"])
        if env.get("FLUVIAL_STORE", "").startswith("postgresql://"):
            from fluvial.serving.postgres.schema import parse_url
            from stores import drop_schema

            drop_schema(parse_url(env["FLUVIAL_STORE"]).schema)


def measure(run: int, interval_ms: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server with one batch interval; returns the figures of that run."""
    flows = [common.EXAMPLES / "device_stats.py"]
    if args.with_hashtags:
        flows.append(common.EXAMPLES / "hashtag_top10.py")
    workdir = Path(tempfile.mkdtemp(prefix="fluvial-serve-latency-"))
    ctx = mp.get_context("spawn")
    proc = None
    try:
        with backends(args) as env, ServeProcess(workdir / "data", flows=flows, batch_interval_ms=interval_ms,
                                                  env=env) as server:
            barrier = ctx.Barrier(2)
            marks, done = ctx.Queue(), ctx.Queue()
            seconds = args.warmup + args.seconds
            proc = ctx.Process(target=sender, daemon=True,
                               args=(server.host, server.port, run, args.rate, seconds, args.probes_per_s,
                                     args.with_hashtags, barrier, marks, done))
            proc.start()
            poller = Poller(server.host, server.port, run, args.poll_ms)
            cpu0 = server.cpu_seconds()
            barrier.wait(START_TIMEOUT_S)
            t0 = time.monotonic_ns()
            result = None
            deadline = time.monotonic() + seconds + 60 + GRACE_S   # bounded: never poll forever
            grace_until = float("inf")
            try:
                while time.monotonic() < deadline:
                    while True:
                        try:
                            poller.add(*marks.get_nowait())
                        except queue.Empty:
                            break
                    if result is None:
                        try:
                            result = done.get_nowait()
                        except queue.Empty:
                            if not proc.is_alive():
                                raise RuntimeError("the sender died") from None
                        else:
                            if not result["ok"]:
                                raise RuntimeError(f"the sender failed: {result['error']}\n{server.output()}")
                            grace_until = time.monotonic() + GRACE_S
                    if result is not None and time.monotonic() > grace_until:
                        break
                    if result is not None and not poller.pending and poller.known == result["probes"]:
                        break
                    poller.step()
                cpu = server.cpu_seconds() - cpu0
                wall = (time.monotonic_ns() - t0) / 1e9
                metrics = server.metrics()
            finally:
                poller.close()
            if result is None:
                raise RuntimeError(f"the sender did not finish\n{server.output()}")
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    warm_ns = t0 + int(args.warmup * 1e9)
    measured = {p: v for p, v in poller.seen.items() if v[0] >= warm_ns}
    lat = sorted((visible - sent) / 1e6 for sent, _, visible, _ in measured.values())
    after_ack = sorted((visible - acked) / 1e6 for _, acked, visible, _ in measured.values())
    never = sum(1 for v in poller.pending.values() if v[0] >= warm_ns)
    runner = metrics["speed_layer"].get("device_stats", {})
    return {
        "batch_interval_ms": interval_ms, "samples": len(lat), "never_visible": never,
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"), "mean_ms": statistics.fmean(lat) if lat else float("nan"),
        "after_ack_p50_ms": percentile(after_ack, 50), "after_ack_p99_ms": percentile(after_ack, 99),
        "ack_p50_ms": result["ack_p50_ms"], "ack_p99_ms": result["ack_p99_ms"],
        "achieved_rate": result["events"] / result["seconds"], "late_ticks": result["late_ticks"],
        "requests": result["requests"], "queries": poller.queries,
        "queries_per_s": poller.queries / wall,
        "query_p50_ms": percentile(poller.query_ms, 50), "query_p99_ms": percentile(poller.query_ms, 99),
        "polls_per_probe": statistics.fmean(v[3] for v in measured.values()) if measured else float("nan"),
        "server_cpu": cpu / wall,
        "micro_batches": runner.get("micro_batches"), "last_batch_ms": runner.get("last_batch_ms"),
        "runner_errors": runner.get("errors"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rate", type=int, default=2000, help="events posted per second (default 2000)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of measured load (default 20)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load left out first (default 2)")
    ap.add_argument("--batch-interval-ms", default=str(TARGET_INTERVAL_MS),
                    help="the speed layer's batch interval; a comma-separated list runs each "
                         f"(e.g. 20,200,1000; default {TARGET_INTERVAL_MS})")
    ap.add_argument("--probes-per-s", type=float, default=20.0, help="probe events per second (default 20)")
    ap.add_argument("--poll-ms", type=float, default=20.0,
                    help="time between two queries for the same pending probe (default 20)")
    ap.add_argument("--log", default="",
                    help="the server's log URL (default: its data directory's files); {run} in it becomes a "
                         "fresh name per run, e.g. nats://127.0.0.1:4222/{run}")
    ap.add_argument("--store", default="",
                    help="the server's view store URL (default: SQLite in its data directory); {run} as in "
                         "--log, e.g. 'postgresql://postgres@127.0.0.1:5432/test?schema={run}'")
    ap.add_argument("--with-hashtags", action="store_true",
                    help="also run examples/hashtag_top10.py; a quarter of the events are then tweets")
    args = ap.parse_args()
    try:
        intervals = [int(x) for x in args.batch_interval_ms.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--batch-interval-ms: expected integers, got {args.batch_interval_ms!r}") from None
    if not intervals or min(intervals) < 1 or args.rate < 1 or args.probes_per_s <= 0:
        raise SystemExit("--batch-interval-ms, --rate and --probes-per-s must be > 0")

    flows = "device_stats.py" + (" + hashtag_top10.py" if args.with_hashtags else "")
    flows += f"; log {args.log or 'files'}, store {args.store or 'SQLite'}"
    print(f"serve_latency: {args.rate:,} events/s in a request every {REQUEST_EVERY_MS} ms, "
          f"{args.probes_per_s:g} probes/s polled every {args.poll_ms:g} ms, {args.warmup:g}+{args.seconds:g} s "
          f"per batch interval; flows: {flows}; at {common.git_head()}", flush=True)
    rows = []
    load_before = os.getloadavg()[0]
    with sigterm_as_exit():
        for run, interval in enumerate(intervals):
            row = measure(run, interval, args)
            rows.append(row)
            print(f"  batch interval {interval:>5} ms: p50 {row['p50_ms']:7.1f}  p90 {row['p90_ms']:7.1f}  "
                  f"p99 {row['p99_ms']:7.1f}  max {row['max_ms']:7.1f} ms  ({row['samples']} probes, "
                  f"{row['never_visible']} never visible)", flush=True)

    print()
    print(f"== serve_latency: POST sent -> row visible in GET /v1/views/{VIEW}, fluvial serve on loopback; "
          f"{args.rate:,} events/s, {args.seconds:g} s measured per row; flows: {flows}")
    load = (load_before, os.getloadavg()[0])
    print(f"  machine: {os.cpu_count()} cores, load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} "
          f"at the end; at {common.git_head()}")
    print(f"{'batch interval':>15}{'probes':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'ack p50/p99 ms':>16}{'query p50 ms':>14}{'queries/s':>11}{'rate ev/s':>11}{'srv CPU':>9}{'batches':>9}")
    for r in rows:
        print(f"{r['batch_interval_ms']:>12} ms{r['samples']:>8}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r['ack_p50_ms']:>9.1f}/{r['ack_p99_ms']:<6.1f}"
              f"{r['query_p50_ms']:>14.1f}{r['queries_per_s']:>11,.0f}{r['achieved_rate']:>11,.0f}"
              f"{r['server_cpu']:>9.0%}"
              f"{r['micro_batches'] or 0:>9,}")
    print("  ack = POST answered (events in the log); query = one GET round trip; srv CPU = server CPU time / "
          "wall time (100% = one core);")
    print(f"  batches = speed-layer micro-batches of device_stats.  Resolution: each pending probe is asked for "
          f"every {args.poll_ms:g} ms (queries/s: the poller's load), and its time is taken when the answer arrives.")
    for r in rows:
        if r["never_visible"] or r["late_ticks"] > 0.05 * r["requests"] or r["runner_errors"]:
            print(f"  note at {r['batch_interval_ms']} ms: {r['never_visible']} probe(s) never visible within "
                  f"{GRACE_S:g} s, {r['late_ticks']} of {r['requests']} requests started > {REQUEST_EVERY_MS} ms "
                  f"late, {r['runner_errors']} speed-layer error(s)")
    target = next((r for r in rows if r["batch_interval_ms"] == TARGET_INTERVAL_MS), None)
    met = None
    if target is not None:
        met = target["never_visible"] == 0 and target["p99_ms"] < TARGET_P99_MS
        print(f"  verdict: {'PASS' if met else 'MISS'} p99 < {TARGET_P99_MS:g} ms at a {TARGET_INTERVAL_MS} ms "
              f"batch interval ({target['p99_ms']:.1f} ms)")
    common.write_result("serve_latency", {
        "benchmark": "serve_latency", "rate": args.rate, "seconds": args.seconds, "warmup_s": args.warmup,
        "probes_per_s": args.probes_per_s, "poll_ms": args.poll_ms, "flows": flows, "rows": rows,
        "load_average_1min": list(load), "target_p99_ms": TARGET_P99_MS,
        "target_interval_ms": TARGET_INTERVAL_MS, "target_met": met,
        "machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; the server and the sender were stopped") from None
