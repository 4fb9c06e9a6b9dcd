"""Overload of ``fluvial serve``: offered load at a multiple of its capacity, for a minute.

    python bench/overload.py [--seconds 60] [--factor 2] [--capacity N] [--connections 256]
                             [--batch 1000] [--limits 'max_queue_wait_ms = 1000'] [--max-pending-mib 64]

1. **Capacity** (skipped with ``--capacity N``): a fresh server, 16 keep-alive connections
   posting back to back for 10 s; capacity = events/s accepted.
2. **Overload**: a fresh server, ``--connections`` keep-alive connections in 4 load-generator
   processes sending batches on a fixed schedule at ``--factor`` x capacity (open loop: the
   schedule does not wait for slow answers as long as a connection is free; each connection has
   one request in flight, so with fewer connections than the server answers in a second the
   clients queue the excess themselves and the server never sees it). A batch answered
   429/503 is sent again after its ``Retry-After`` (same ``(device, seq)``), between new
   batches; a connection error leaves its batch "unknown" (it may be stored).
3. **Checks**: every 429/503 carried ``Retry-After``; the server's resident memory (VmRSS,
   sampled every 20 ms) stayed under its baseline + 6 x ``max_pending_bytes`` + 64 MiB
   (docs/guarantees.md, "Load and limits"); afterwards the log holds every acknowledged
   event exactly once, and nothing else but "unknown" ones.

Reported: offered and accepted events/s, answers by status, shed requests by reason (from
``/v1/metrics``), latency of acknowledged requests (p50/p99/max), how long a new connection
(``GET /healthz`` once a second) waits for its answer during the load, peak RSS. The exit code
is 1 when a check fails. Before ``[limits]`` (issue 16) the same load gave no 429/503, p99
11.5 s and RSS 518 MiB.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from ingest_http import ServeProcess, percentile, sigterm_as_exit

MIB = 1 << 20
PROCESSES = 4
T0_MS = 1_700_000_000_000
MEMORY_FACTOR = 6
MEMORY_MARGIN = 64 * MIB


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def body_of(device: str, first: int, batch: int) -> bytes:
    import msgspec

    return msgspec.json.encode([{"device": device, "kind": "reading", "ts": T0_MS + first + k, "seq": first + k,
                                 "payload": {"kind": "temp", "value": float((first + k) % 97)}}
                                for k in range(batch)])


# -- the load generator ------------------------------------------------------------------------------

def connection_loop(port: int, device: str, batch: int, interval: float, start: float, stop: float,
                    out: dict[str, Any]) -> None:
    """One keep-alive connection: a new batch every ``interval`` s, refused batches again after Retry-After."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    retries: list[tuple[float, int]] = []          # (due, first seq)
    next_new, next_seq = start, 0
    while True:
        now = time.monotonic()
        if now >= stop and not retries:
            break
        if retries and (retries[0][0] <= next_new or now >= stop):
            due, first = retries.pop(0)
        elif now < stop:
            due, first = next_new, next_seq
            next_seq += batch
            next_new += interval
        else:
            break
        if due > now:
            time.sleep(due - now)
        if time.monotonic() > stop + 30:           # give up on what is still refused 30 s after the end
            out["unknown"].append((device, first))
            continue
        sent = time.monotonic()
        try:
            conn.request("POST", "/v1/events", body=body_of(device, first, batch), headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            out["statuses"][0] += 1
            out["unknown"].append((device, first))
            continue
        out["statuses"][response.status] += 1
        if response.status == 200:
            out["latency"].append(time.monotonic() - sent)
            out["acked"].append((device, first))
        elif response.status in (429, 503, 507):
            after = response.getheader("Retry-After")
            if after is None or not after.isdigit():
                out["no_retry_after"] += 1
                after = "1"
            retries.append((time.monotonic() + int(after), first))
            retries.sort()
        else:
            raise RuntimeError(f"POST /v1/events answered {response.status}")
    conn.close()


def generator(proc: int, port: int, connections: int, batch: int, interval: float, start: float, stop: float,
              results: Any) -> None:
    """One load-generator process: ``connections`` threads, one connection each."""
    outs = [{"statuses": Counter(), "latency": [], "acked": [], "unknown": [], "no_retry_after": 0}
            for _ in range(connections)]
    threads = [threading.Thread(target=connection_loop, daemon=True,
                                args=(port, f"p{proc}-c{k}", batch, interval, start + k * interval / connections,
                                      stop, outs[k])) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({"statuses": dict(sum((o["statuses"] for o in outs), Counter())),
                 "latency": [x for o in outs for x in o["latency"]],
                 "acked": [x for o in outs for x in o["acked"]], "unknown": [x for o in outs for x in o["unknown"]],
                 "no_retry_after": sum(o["no_retry_after"] for o in outs)})


# -- the runs ----------------------------------------------------------------------------------------------

def serve(workdir: Path, limits: str, max_pending: int) -> ServeProcess:
    server = ServeProcess(workdir / "data")
    server.config.write_text(server.config.read_text() + f"[server]\nmax_pending_bytes = {max_pending}\n"
                             + (f"[limits]\n{limits}\n" if limits else ""))
    return server


def capacity(args: argparse.Namespace) -> float:
    """Events/s accepted with 16 connections posting back to back for 10 s."""
    workdir = Path(tempfile.mkdtemp(prefix="fluvial-overload-capacity-"))
    try:
        with serve(workdir, args.limits, args.max_pending_mib * MIB) as server:
            stop = time.monotonic() + 10
            accepted = [0] * 16

            def post(k: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                seq = 0
                while time.monotonic() < stop:
                    conn.request("POST", "/v1/events", body=body_of(f"cap-{k}", seq, args.batch),
                                 headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                    if response.status == 200:
                        accepted[k] += json.loads(data)["accepted"]
                        seq += args.batch
                conn.close()

            started = time.monotonic()
            threads = [threading.Thread(target=post, args=(k,)) for k in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sum(accepted) / (time.monotonic() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def overload(args: argparse.Namespace, rate: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fluvial-overload-"))
    max_pending = args.max_pending_mib * MIB
    try:
        with serve(workdir, args.limits, max_pending) as server:
            warm_up(server)
            time.sleep(0.3)
            baseline = rss_bytes(server.pid)
            peak, sampling = [baseline], [True]

            newcomers: list[tuple[float, int]] = []                 # (seconds, status) of GET /healthz

            def sample() -> None:
                while sampling[0]:
                    peak[0] = max(peak[0], rss_bytes(server.pid))
                    time.sleep(0.02)

            def newcomer() -> None:  # a new connection every second: is it served while the load lasts?
                while sampling[0]:
                    sent = time.monotonic()
                    try:
                        status = server.request("GET", "/healthz", timeout=120)[0]
                    except OSError:
                        status = 0
                    newcomers.append((time.monotonic() - sent, status))
                    time.sleep(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            prober = threading.Thread(target=newcomer, daemon=True)
            prober.start()
            per_process = args.connections // PROCESSES
            interval = args.batch * PROCESSES * per_process / rate   # seconds between batches of one connection
            ctx = mp.get_context("spawn")
            results = ctx.Queue()
            start = time.monotonic() + 3.0                            # the processes are up by then
            stop = start + args.seconds
            procs = [ctx.Process(target=generator, daemon=True, args=(p, server.port, per_process, args.batch,
                                                                         interval, start, stop, results))
                     for p in range(PROCESSES)]
            for p in procs:
                p.start()
            parts = [results.get(timeout=args.seconds + 300) for _ in procs]
            for p in procs:
                p.join(30)
            sampling[0] = False
            sampler.join()
            prober.join()
            metrics = server.metrics()
        exact = check_log(workdir / "data", parts, args.batch)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    statuses = sum((Counter(p["statuses"]) for p in parts), Counter())
    latency = [x for p in parts for x in p["latency"]]
    return {"offered_events_per_s": rate, "accepted_events_per_s": statuses[200] * args.batch / args.seconds,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "shed": metrics.get("limits", {}).get("shed"), "no_retry_after": sum(p["no_retry_after"] for p in parts),
            "p50_s": percentile(latency, 50), "p99_s": percentile(latency, 99), "max_s": max(latency, default=0.0),
            "newcomer_max_s": max((t for t, _ in newcomers), default=0.0),
            "newcomer_statuses": dict(Counter(str(s) for _, s in newcomers)),
            "rss_baseline_bytes": baseline, "rss_peak_bytes": peak[0],
            "rss_bound_bytes": baseline + MEMORY_FACTOR * max_pending + MEMORY_MARGIN, "log_exact": exact}


def check_log(data_dir: Path, parts: list[dict[str, Any]], batch: int) -> str:
    """'' when the log holds exactly the acknowledged events (and maybe unknown ones), else what is wrong.

    A connection's batches start at multiples of ``batch``, so an event's batch is ``seq // batch``:
    per device, every acknowledged batch must be stored whole, once, and no other batch but unknown ones.
    """
    import fluvial

    stored: dict[str, array[int]] = {}
    with fluvial.open(data_dir) as ws:
        log = ws.log
        for p, end in enumerate(log.end_offsets()):
            offset = 0
            while offset < end:
                events = log.read(p, offset, max_records=200_000).events
                for e in events:
                    if e.device != "warm-up":
                        stored.setdefault(e.device, array("q")).append(e.seq)
                offset += len(events)
    acked: dict[str, set[int]] = {}
    unknown: dict[str, set[int]] = {}
    for part in parts:
        for into, key in ((acked, "acked"), (unknown, "unknown")):
            for device, first in part[key]:
                into.setdefault(device, set()).add(first // batch)
    for device in set(stored) | set(acked):
        seqs = sorted(stored.get(device, ()))
        twice = sum(1 for a, b in itertools.pairwise(seqs) if a == b)
        if twice:
            return f"{device}: {twice} events stored twice"
        per_batch = Counter(seq // batch for seq in seqs)
        partial = [b for b in acked.get(device, ()) if per_batch[b] != batch]
        if partial:
            return f"{device}: acknowledged events missing from {len(partial)} batches"
        refused = set(per_batch) - acked.get(device, set()) - unknown.get(device, set())
        if refused:
            return f"{device}: events of {len(refused)} refused batches stored"
    return ""


def warm_up(server: ServeProcess) -> None:
    """One small request first (imports done, log open): then the resident memory is the baseline."""
    status, answer = server.request("POST", "/v1/events", body_of("warm-up", 0, 1),
                                    {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"the warm-up request got {status}: {answer[:300]!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--seconds", type=float, default=60, help="how long the overload lasts (default 60)")
    ap.add_argument("--factor", type=float, default=2.0, help="offered load / capacity (default 2)")
    ap.add_argument("--capacity", type=float, default=None, help="events/s the server takes (default: measured)")
    ap.add_argument("--connections", type=int, default=256, help="client connections, in 4 processes (default 256)")
    ap.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    ap.add_argument("--max-pending-mib", type=int, default=64, help="[server] max_pending_bytes in MiB (default 64)")
    ap.add_argument("--limits", default="", help="lines for [limits] of the server's fluvial.toml (default: none)")
    args = ap.parse_args()
    if args.connections < PROCESSES or args.batch < 1 or args.seconds <= 0 or args.factor <= 0:
        raise SystemExit(f"--connections must be >= {PROCESSES}; --batch, --seconds and --factor > 0")
    with sigterm_as_exit():
        cap = args.capacity or capacity(args)
        print(f"overload: capacity {cap:,.0f} events/s; offering {args.factor:g} x for {args.seconds:g} s with "
              f"{args.connections} connections, {args.batch} events per request; at {common.git_head()}", flush=True)
        result = overload(args, cap * args.factor)
    refused = sum(v for k, v in result["statuses"].items() if k in ("429", "503", "507"))
    checks = {
        "excess refused with 429/503": refused > 0,
        "every refusal has Retry-After": result["no_retry_after"] == 0,
        "memory under baseline + 6 x max_pending_bytes + 64 MiB": result["rss_peak_bytes"] <= result["rss_bound_bytes"],
        "log holds exactly the acknowledged events": result["log_exact"] == "",
    }
    print(f"  offered {result['offered_events_per_s']:,.0f} events/s, accepted {result['accepted_events_per_s']:,.0f}")
    print(f"  answers {result['statuses']}; shed by reason {result['shed']}")
    print(f"  latency of acknowledged requests: p50 {result['p50_s']:.2f} s, p99 {result['p99_s']:.2f} s, "
          f"max {result['max_s']:.2f} s")
    print(f"  new connections during the load (GET /healthz each second): answers {result['newcomer_statuses']}, "
          f"slowest {result['newcomer_max_s']:.2f} s")
    print(f"  RSS: baseline {result['rss_baseline_bytes'] / MIB:.0f} MiB, peak {result['rss_peak_bytes'] / MIB:.0f} "
          f"MiB, bound {result['rss_bound_bytes'] / MIB:.0f} MiB")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {result['log_exact']}" if name.startswith("log") and
                                                          not ok else ""))
    common.write_result("overload", {**result, "capacity_events_per_s": cap, "factor": args.factor,
                                     "seconds": args.seconds, "connections": args.connections, "batch": args.batch,
                                     "checks": checks, "machine": common.machine()})
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
