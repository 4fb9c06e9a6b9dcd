"""HTTP ingest throughput of ``fluvial serve``: events/s accepted over loopback, next to the
same events appended in-process with ``LocalLog.append`` (the ceiling without HTTP).

    python bench/ingest_http.py [--events 500000] [--batch 1000] [--connections 4]
                                [--format json|msgpack] [--gzip] [--fsync batch|interval]
                                [--with-flow] [--matrix] [--profile] [--repeat 3]

Per run (``--repeat`` times per variant, medians reported):

* a fresh ``fluvial serve`` child process (no flows; ``--with-flow`` runs
  ``examples/device_stats.py`` in its speed layer) on a free loopback port,
  a fresh data directory, ``fluvial.toml`` with ``[log] fsync = ...``
  ("batch": an acknowledged event is fsynced; "interval": fsync at most
  every second);
* the request bodies are made BEFORE the clock starts: ``--events`` envelopes
  of kind ``reading`` (unique ``(device, seq)``, 10k devices) in batches of
  ``--batch``, encoded as a JSON array or MessagePack, gzipped or not;
* ``--connections`` load-generator processes (one keep-alive
  ``http.client`` connection each) post their share of the bodies as fast as
  the server answers; the clock runs from the first request sent to the last
  response read (one monotonic clock: same machine);
* events/s = sum of ``accepted`` in the responses / that time; afterwards the
  log must hold exactly the events sent (``fluvial.open(dir).log.end_offsets()``),
  or the benchmark fails.

The in-process peer appends the same events (prebuilt ``Event`` structs) with
``LocalLog.append`` in batches of ``--batch`` into a fresh log with the same
fsync policy.  The stage table times, on one thread in this process, what the
server does per body: gunzip, msgspec decode, schema validation, log append.

``--matrix`` runs json/msgpack x gzip off/on x fsync batch/interval.
``--profile`` samples the server with py-spy during one extra run of the
first variant and prints where its CPU time goes.  Target: >= 100k events/s
with batches of 1000.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip as gzip_module
import http.client
import json
import multiprocessing as mp
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TARGET_EVENTS_PER_S = 100_000
DEVICES = 10_000
READING_KINDS = ("temp", "humidity", "accel_x", "accel_y", "accel_z", "battery")
T0_MS = 1_700_000_000_000
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
START_TIMEOUT_S = 60.0


# -- the server ----------------------------------------------------------------------------

class ServeProcess:
    """``fluvial --data-dir DIR serve --port 0 --config TOML ...`` as a child process.

    The port is the one the server announces in ``DIR/server.json``; its output
    goes to ``DIR/../serve.log``.  ``stop()`` (SIGTERM, then SIGKILL after 30 s)
    is safe to call at any time and more than once; use it as a context manager
    so that the server never outlives the benchmark.
    """

    def __init__(self, data_dir: Path, *, flows: Sequence[Path] = (), fsync: str = "batch",
                 batch_interval_ms: int | None = None, env: dict[str, str] | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}   # FLUVIAL_LOG / FLUVIAL_STORE: other backends
        self.config = data_dir.parent / "fluvial.toml"
        self.log_file = data_dir.parent / "serve.log"
        self.config.write_text(f'[log]\nfsync = "{fsync}"\n')
        self.args = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data_dir), "serve",
                     "--config", str(self.config), "--host", "127.0.0.1", "--port", "0",
                     "--batch-every", "0"]
        for flow in flows:
            self.args += ["--flow", str(flow)]
        if batch_interval_ms is not None:
            self.args += ["--batch-interval-ms", str(batch_interval_ms)]
        self.args += list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServeProcess:
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=common.REPO,
                                         env=self.env)
        info = self.data_dir / "server.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fluvial serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if not self.port:
                    self.port = int(json.loads(info.read_text())["url"].rsplit(":", 1)[1])
                if self.request("GET", "/healthz", timeout=2)[0] == 200:
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fluvial serve was not healthy within {START_TIMEOUT_S:g} s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, Any]:
        status, body = self.request("GET", "/v1/metrics")
        if status != 200:
            raise RuntimeError(f"GET /v1/metrics answered {status}: {body[:300]!r}")
        return dict(json.loads(body))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        return proc_cpu_seconds(self.pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so that ``finally`` blocks stop the child processes."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    i = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[i]


# -- the data --------------------------------------------------------------------------------

def make_events(n: int, seed: int = 11) -> list[Any]:
    """``n`` readings shaped like ``fluvial generate readings`` (no late ones), with a per-device
    seq (unique (device, seq))."""
    from fluvial import Event

    rng = random.Random(seed)
    seqs = [0] * DEVICES
    out = []
    for k in range(n):
        d = rng.randrange(DEVICES)
        seqs[d] += 1
        out.append(Event(device=f"dev-{d:05d}", kind="reading", ts=T0_MS + k // 10, seq=seqs[d],
                         payload={"kind": rng.choice(READING_KINDS), "value": round(rng.gauss(20, 5), 3)}))
    return out


def batches(events: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [events[i:i + size] for i in range(0, len(events), size)]


def encode_bodies(chunks: Sequence[Sequence[Any]], fmt: str, gzip: bool) -> list[bytes]:
    import msgspec

    encode = msgspec.json.encode if fmt == "json" else msgspec.msgpack.encode
    bodies = [encode(chunk) for chunk in chunks]
    if gzip:
        bodies = [gzip_module.compress(b, compresslevel=6) for b in bodies]
    return bodies


# -- the load generator (one process per connection) -------------------------------------------

def post_worker(host: str, port: int, bodies: list[bytes], headers: dict[str, str],
                barrier: Any, out: Any) -> None:
    """Post ``bodies`` one after another on one keep-alive connection; report to ``out``."""
    import msgspec

    decode = msgspec.json.Decoder().decode
    lat_ns: list[int] = []
    accepted = duplicates = throttled = 0
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("GET", "/healthz")   # open the connection before the clock starts
        conn.getresponse().read()
        barrier.wait(START_TIMEOUT_S)
        cpu0 = time.process_time()
        start = time.monotonic_ns()
        for body in bodies:
            while True:
                t = time.monotonic_ns()
                conn.request("POST", "/v1/events", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status in (429, 503):   # pushed back: wait as told, send again
                    throttled += 1
                    time.sleep(float(response.getheader("Retry-After") or 1))
                    continue
                lat_ns.append(time.monotonic_ns() - t)
                if response.status != 200:
                    raise RuntimeError(f"POST /v1/events answered {response.status}: {data[:300]!r}")
                doc = decode(data)
                accepted += doc["accepted"]
                duplicates += doc["duplicates"]
                if doc["rejected"]:
                    raise RuntimeError(f"the server rejected events: {doc['rejected'][:3]}")
                break
        end = time.monotonic_ns()
        out.put({"ok": True, "accepted": accepted, "duplicates": duplicates, "throttled": throttled,
                 "requests": len(lat_ns), "lat_ns": lat_ns, "start_ns": start, "end_ns": end,
                 "cpu_s": time.process_time() - cpu0})
    except BaseException as exc:
        out.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        conn.close()


# -- one HTTP run -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    fmt: str
    gzip: bool
    fsync: str

    @property
    def label(self) -> str:
        return f"{self.fmt}{'+gzip' if self.gzip else ''}, fsync={self.fsync}"


@dataclass
class Run:
    seconds: float
    accepted: int
    requests: int
    lat_ms: list[float]
    server_cpu_s: float
    client_cpu_s: float
    log_appends: int
    throttled: int
    spy_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def http_run(variant: Variant, bodies: list[bytes], n_events: int, connections: int, flows: Sequence[Path],
             profile: tuple[Path, str] | None = None) -> Run:
    """One server, one load: every body posted once; the log checked afterwards.

    ``profile = (output, mode)`` samples the server with py-spy during the load;
    mode ``idle``: every thread all the time, ``gil``: the thread holding the GIL.
    """
    import fluvial

    headers = {"Content-Type": CONTENT_TYPES[variant.fmt]}
    if variant.gzip:
        headers["Content-Encoding"] = "gzip"
    shares = [bodies[i::connections] for i in range(connections)]
    ctx = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="fluvial-ingest-http-"))
    data_dir = workdir / "data"
    workers: list[Any] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        with ServeProcess(data_dir, flows=flows, fsync=variant.fsync) as server:
            barrier = ctx.Barrier(connections + 1)
            out = ctx.Queue()
            workers = [ctx.Process(target=post_worker, daemon=True,
                                   args=(server.host, server.port, share, headers, barrier, out))
                       for share in shares]
            for w in workers:
                w.start()
            if profile is not None:
                spy = start_py_spy(server.pid, *profile)
            cpu0 = server.cpu_seconds()
            spy_started = time.monotonic()
            barrier.wait(START_TIMEOUT_S)
            results = [out.get(timeout=600) for _ in workers]
            server_cpu = server.cpu_seconds() - cpu0
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy_seconds = time.monotonic() - spy_started
                spy.wait(60)
            for w in workers:
                w.join(30)
            failed = [r["error"] for r in results if not r["ok"]]
            if failed:
                raise RuntimeError(f"load generator failed: {failed[0]}\nserver log:\n{server.output()}")
            metrics = server.metrics()
        with fluvial.open(data_dir) as ws:
            stored = sum(ws.log.end_offsets())
    finally:
        if spy is not None:
            if spy.poll() is None:
                spy.kill()
                spy.wait(10)
            if spy.stdout is not None:
                spy.stdout.close()
        for w in workers:
            if w.is_alive():
                w.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    accepted = sum(r["accepted"] for r in results)
    duplicates = sum(r["duplicates"] for r in results)
    if accepted != n_events or duplicates or stored != n_events:
        raise common.ResultMismatch(f"{variant.label}: sent {n_events:,} events, the server accepted "
                                    f"{accepted:,} ({duplicates:,} duplicates), the log holds {stored:,}")
    seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    return Run(seconds=seconds, accepted=accepted, requests=sum(r["requests"] for r in results),
               lat_ms=[x / 1e6 for r in results for x in r["lat_ns"]], server_cpu_s=server_cpu,
               client_cpu_s=sum(r["cpu_s"] for r in results), log_appends=int(metrics["log_appends"]),
               throttled=sum(r["throttled"] for r in results),
               spy_seconds=spy_seconds if spy is not None else 0.0)


# -- the in-process peer and the stage costs ----------------------------------------------------------

def direct_append(chunks: Sequence[Sequence[Any]], fsync: str) -> float:
    """Seconds to append ``chunks`` (Event batches) to a fresh LocalLog, one ``append`` per chunk."""
    from fluvial.log.local import LocalLog

    workdir = Path(tempfile.mkdtemp(prefix="fluvial-ingest-direct-"))
    try:
        log = LocalLog.open(workdir / "log", fsync=fsync)
        try:
            started = time.perf_counter()
            n = sum(log.append(chunk).accepted for chunk in chunks)
            seconds = time.perf_counter() - started
            stored = sum(log.end_offsets())
        finally:
            log.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    expected = sum(len(c) for c in chunks)
    if n != expected or stored != expected:
        raise common.ResultMismatch(f"LocalLog.append accepted {n:,}, holds {stored:,}, expected {expected:,}")
    return seconds


def stage_costs(variant: Variant, bodies: list[bytes], n_events: int) -> dict[str, float]:
    """Seconds, on one thread, for each step the server takes with every body (no HTTP, no log)."""
    import msgspec

    from fluvial import Event
    from fluvial.events.schema import SchemaRegistry
    from fluvial.server.ingest import decompress, parse_body

    registry = SchemaRegistry.with_builtins()
    limit = 1 << 30
    decoder = (msgspec.json.Decoder(list[Event]) if variant.fmt == "json"
               else msgspec.msgpack.Decoder(list[Event]))
    costs: dict[str, float] = {}
    started = time.perf_counter()
    raw = [decompress(b, "gzip" if variant.gzip else None, limit) for b in bodies]
    costs["gunzip"] = time.perf_counter() - started if variant.gzip else 0.0
    started = time.perf_counter()
    for body in raw:
        decoder.decode(body)
    costs["decode"] = time.perf_counter() - started
    started = time.perf_counter()
    n = 0
    for body in raw:
        n += len(parse_body(body, CONTENT_TYPES[variant.fmt], registry, max_events=limit).events)
    costs["parse_body"] = time.perf_counter() - started
    if n != n_events:
        raise common.ResultMismatch(f"parse_body found {n:,} valid events of {n_events:,}")
    return costs


# -- profile ---------------------------------------------------------------------------------------------

PROFILE_HZ = 100


def start_py_spy(pid: int, output: Path, mode: str) -> subprocess.Popen[bytes]:
    """``py-spy record`` on ``pid``, returned once it samples (it writes ``output`` on SIGINT)."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", str(PROFILE_HZ),
                            "--threads", "--nonblocking", f"--{mode}", "--output", str(output)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert spy.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and spy.poll() is None:
        if select.select([spy.stdout], [], [], 0.5)[0] and b"Sampling process" in spy.stdout.readline():
            return spy
    spy.kill()
    raise SystemExit(f"py-spy did not start sampling pid {pid} (exit code {spy.poll()}); on Linux it needs "
                     "ptrace permission (kernel.yama.ptrace_scope = 0, or run as root)")


# What a sample of a server thread was doing: the first bucket matching a frame, innermost frame first.
PROFILE_BUCKETS = (
    ("writer: waiting for requests", ("LogWriter._take",)),
    ("thread pool: idle", ("_worker (concurrent/futures/thread.py",)),
    ("log: fsync", ("SegmentStore.sync", "SegmentStore._roll")),
    ("log: dedup (DedupState.add)", ("DedupState.",)),
    ("log: envelope checks (check_envelope)", ("check_envelope",)),
    ("log: segment write (encode_batch, os.write)", ("SegmentStore.append", "encode_batch")),
    ("log: append loop (crc32, grouping, encode)", ("LocalLog.append",)),
    ("log: dead letters", ("DeadLetter",)),
    ("writer: grouping, futures", ("fluvial/server/writer", "concurrent/futures")),
    ("ingest: gunzip", ("decompress (fluvial/server/ingest",)),
    ("ingest: validate payloads", ("_accept (", "validate_payload", "SchemaRegistry.get")),
    ("ingest: decode body (msgspec)", ("parse_body (",)),
    ("ingest: response, metrics", ("MsgspecJSON", "Metrics.")),
    ("lag monitor (end_offsets)", ("Server._monitor", "end_offsets")),
    ("ingest: handler (body chunks, awaits)", ("post_events", "_ingest", "guard.")),
    ("HTTP: uvicorn/starlette Python code", ("uvicorn/", "starlette/", "h11/")),
    ("event loop: idle or uvloop/httptools C code", ("asyncio/", "uvloop", "runners.py")),
    ("speed layer (stream runner)", ("fluvial/engine", "fluvial/serving", "SpeedRunner")),
)


@dataclass
class Profile:
    """py-spy ``record --idle --format raw`` output, in wall-time samples per server thread."""

    threads: Counter[str] = field(default_factory=Counter)
    buckets: dict[str, Counter[str]] = field(default_factory=dict)
    leaves: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path) -> Profile:
        prof = cls()
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            thread = frames[0].split(" ", 2)[-1] if frames[0].startswith("thread (") else "?"
            bucket = "other"
            for frame in reversed(frames):
                hit = next((name for name, needles in PROFILE_BUCKETS if any(s in frame for s in needles)), None)
                if hit is not None:
                    bucket = hit
                    break
            prof.threads[thread] += n
            prof.buckets.setdefault(thread, Counter())[bucket] += n
            prof.leaves[(thread, frames[-1])] += n
        return prof

    def print_wall(self, seconds: float, events: int) -> dict[str, Any]:
        """Per server thread: share of its wall time (and us per event) in each bucket."""
        doc: dict[str, Any] = {}
        per_event = seconds / events * 1e6
        for thread, total in self.threads.most_common():
            buckets = self.buckets[thread]
            idle = sum(n for name, n in buckets.items() if "idle" in name or "waiting" in name)
            if idle / total > 0.98:
                continue
            print(f"  thread {thread} ({total:,} samples = 100% of its wall time)")
            doc[thread] = {}
            for name, n in buckets.most_common():
                if n / total >= 0.005:
                    print(f"    {name:<50}{n / total:>7.1%}{n / total * per_event:>8.2f} us/event")
                doc[thread][name] = n / total
        return doc

    def print_gil(self, seconds: float, events: int, top: int = 14) -> dict[str, Any]:
        """Who holds the GIL, as a share of the load's wall time (and us of GIL per event)."""
        ticks = PROFILE_HZ * seconds
        per_event = seconds / events * 1e6
        merged: Counter[str] = Counter()
        for thread, buckets in self.buckets.items():
            for name, n in buckets.items():
                merged[f"{thread}: {name}"] += n
        held = sum(merged.values())
        doc = {"gil_held": held / ticks}
        for name, n in merged.most_common():
            if n / ticks >= 0.005:
                print(f"    {name:<70}{n / ticks:>7.1%}{n / ticks * per_event:>8.2f} us/event")
            doc[name] = n / ticks
        print(f"    {'GIL held, all threads':<70}{held / ticks:>7.1%}{held / ticks * per_event:>8.2f} us/event")
        print("  hottest lines holding the GIL:")
        for (thread, frame), n in self.leaves.most_common(top):
            print(f"    {n / ticks:>6.1%}  {thread:<19} {frame}  {source_line(frame)}")
        return doc


def source_line(frame: str) -> str:
    """``f (fluvial/log/local.py:252)`` -> that line of src/fluvial/log/local.py, stripped."""
    where = frame.rpartition(" (")[2].rstrip(")")
    file, _, line = where.rpartition(":")
    path = common.REPO / "src" / file
    if not file.startswith("fluvial/") or not line.isdigit() or not path.exists():
        return ""
    lines = path.read_text().splitlines()
    text = lines[int(line) - 1].strip() if int(line) <= len(lines) else ""
    return f"| {text[:70]}"


# -- report ----------------------------------------------------------------------------------------------

@dataclass
class Result:
    variant: Variant
    runs: list[Run] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def lat(self, q: float) -> float:
        return statistics.median(percentile(r.lat_ms, q) for r in self.runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--events", type=int, default=500_000, help="events per run (default 500000)")
    ap.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    ap.add_argument("--connections", type=int, default=4,
                    help="load-generator processes, one keep-alive connection each (default 4)")
    ap.add_argument("--format", choices=("json", "msgpack"), default="json", help="request body format")
    ap.add_argument("--gzip", action="store_true", help="gzip the request bodies")
    ap.add_argument("--fsync", choices=("batch", "interval"), default="batch",
                    help="the server's [log] fsync (default batch: acknowledged => fsynced)")
    ap.add_argument("--matrix", action="store_true",
                    help="every variant: json/msgpack x gzip off/on x fsync batch/interval")
    ap.add_argument("--with-flow", action="store_true",
                    help="run examples/device_stats.py in the server's speed layer during the load")
    ap.add_argument("--profile", action="store_true",
                    help="one extra run of the first variant under py-spy (pip install py-spy)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; medians reported (default 3)")
    args = ap.parse_args()
    if args.events < 1 or args.batch < 1 or args.connections < 1 or args.repeat < 1:
        raise SystemExit("--events, --batch, --connections and --repeat must be >= 1")

    if args.matrix:
        variants = [Variant(f, g, s) for s in ("batch", "interval") for f in ("json", "msgpack")
                    for g in (False, True)]
    else:
        variants = [Variant(args.format, args.gzip, args.fsync)]
    flows = [common.EXAMPLES / "device_stats.py"] if args.with_flow else []

    print(f"ingest_http: {args.events:,} readings in requests of {args.batch:,}, {args.connections} "
          f"connection(s), flows: {', '.join(f.name for f in flows) or 'none'}; at {common.git_head()}", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    events = make_events(args.events)
    chunks = batches(events, args.batch)
    print(f"  made {len(events):,} events in {time.perf_counter() - started:.1f} s (not timed)", flush=True)

    results: list[Result] = []
    direct: dict[str, list[float]] = {}
    with sigterm_as_exit():
        for variant in variants:
            bodies = encode_bodies(chunks, variant.fmt, variant.gzip)
            size = sum(len(b) for b in bodies)
            print(f"  {variant.label}: {len(bodies):,} bodies, {size / 1e6:.1f} MB "
                  f"({size / len(events):.0f} B/event)", flush=True)
            res = Result(variant)
            for i in range(args.repeat):
                run = http_run(variant, bodies, len(events), args.connections, flows)
                res.runs.append(run)
                print(f"    http   run {i + 1}/{args.repeat}: {run.seconds:6.2f} s  {run.events_per_s:>9,.0f} "
                      f"events/s  {run.requests_per_s:6,.0f} req/s  p50 {percentile(run.lat_ms, 50):6.1f} ms  "
                      f"p99 {percentile(run.lat_ms, 99):6.1f} ms  server CPU {run.server_cpu_s / run.seconds:.0%}"
                      f"  {run.accepted / max(1, run.log_appends):,.0f} events/append  log checked", flush=True)
                if variant.fsync not in direct or len(direct[variant.fsync]) <= i:
                    secs = direct_append(chunks, variant.fsync)
                    direct.setdefault(variant.fsync, []).append(secs)
                    print(f"    direct run {i + 1}/{args.repeat}: {secs:6.2f} s  {len(events) / secs:>9,.0f} "
                          f"events/s  (LocalLog.append, fsync={variant.fsync})", flush=True)
                res.stages.append(stage_costs(variant, bodies, len(events)))
            res.direct_s = direct[variant.fsync]
            results.append(res)
        profiles: dict[str, tuple[Path, Run]] = {}
        if args.profile:
            variant = variants[0]
            common.RESULTS.mkdir(parents=True, exist_ok=True)
            bodies = encode_bodies(chunks, variant.fmt, variant.gzip)
            for mode in ("idle", "gil"):
                out = common.RESULTS / f"ingest_http-profile-{mode}.txt"
                run = http_run(variant, bodies, len(events), args.connections, flows, profile=(out, mode))
                profiles[mode] = (out, run)
                print(f"    profiled run (py-spy --{mode}): {run.events_per_s:,.0f} events/s, server CPU "
                      f"{run.server_cpu_s / run.seconds:.0%}", flush=True)

    args.load = (load_before, os.getloadavg()[0])
    report(args, results, len(events), flows, profiles)


def report(args: argparse.Namespace, results: list[Result], n: int, flows: list[Path],
           profiles: dict[str, tuple[Path, Run]]) -> None:
    print()
    print(f"== ingest_http: {n:,} events per run, {args.batch:,} per request, {args.connections} connections, "
          f"flows: {', '.join(f.name for f in flows) or 'none'} (median of {args.repeat} runs)")
    print(f"  machine: {os.cpu_count()} cores, load average (1 min) {args.load[0]:.1f} at the start, "
          f"{args.load[1]:.1f} at the end; at {common.git_head()}")
    print(f"{'variant':<28}{'events/s':>10}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'srv CPU':>9}{'cli CPU':>9}"
          f"{'ev/append':>10}{'direct ev/s':>13}{'http/direct':>12}")
    for res in results:
        d = n / statistics.median(res.direct_s)
        eps = res.med("events_per_s")
        cpu = statistics.median(r.server_cpu_s / r.seconds for r in res.runs)
        cli = statistics.median(r.client_cpu_s / r.seconds for r in res.runs)
        group = statistics.median(r.accepted / max(1, r.log_appends) for r in res.runs)
        print(f"{res.variant.label:<28}{eps:>10,.0f}{res.med('requests_per_s'):>8,.0f}{res.lat(50):>8.1f}"
              f"{res.lat(99):>8.1f}{cpu:>9.0%}{cli:>9.0%}{group:>10,.0f}{d:>13,.0f}{eps / d:>12.2f}")
    print("  events/s = accepted (sum of the responses) / first request sent -> last response read;")
    print("  srv/cli CPU = CPU time of the server / of all load-generator processes over wall time (100% = one "
          f"core; the machine has {os.cpu_count()});")
    print("  ev/append = events per group commit (log.append call); direct = LocalLog.append in-process, same "
          "events, same fsync")
    print("  policy, one append per request-sized batch (no HTTP, no decode, no validation).")
    throttled = sum(r.throttled for res in results for r in res.runs)
    if throttled:
        print(f"  {throttled} request(s) were pushed back (429/503) and sent again")

    print()
    print("the server's work per event, timed on one thread of this process (us per event, median of the runs):")
    print(f"{'variant':<28}{'gunzip':>8}{'decode':>8}{'validate':>10}{'log append':>12}{'sum':>8}"
          f"{'1-thread ceiling':>18}")
    for res in results:
        def us(key: str, res: Result = res) -> float:
            return statistics.median(st[key] for st in res.stages) / n * 1e6

        gunzip, decode, parse = us("gunzip"), us("decode"), us("parse_body")
        append = statistics.median(res.direct_s) / n * 1e6
        total = gunzip + parse + append
        print(f"{res.variant.label:<28}{gunzip:>8.2f}{decode:>8.2f}{parse - decode:>10.2f}{append:>12.2f}"
              f"{total:>8.2f}{1e6 / total:>11,.0f} ev/s")
    print("  decode = msgspec body -> list[Event]; validate = parse_body - decode (payload schemas, device ids);")
    print("  log append = the direct LocalLog.append above (fsync included); ceiling = 1 / sum: one thread, no HTTP.")

    best = max(res.med("events_per_s") for res in results)
    default = next((res for res in results if res.variant == Variant("json", False, "batch")), results[0])
    verdict = "PASS" if default.med("events_per_s") >= TARGET_EVENTS_PER_S else "MISS"
    print(f"  verdict ({default.variant.label}): {verdict} >= {TARGET_EVENTS_PER_S:,} events/s with batches "
          f"of {args.batch:,} ({default.med('events_per_s'):,.0f}); best variant {best:,.0f} events/s")

    prof_doc: dict[str, Any] = {}
    label = results[0].variant.label
    if "idle" in profiles:
        path, run = profiles["idle"]
        print()
        print(f"server threads' wall time (py-spy --idle, {PROFILE_HZ} Hz, one extra run of {label} at "
              f"{run.events_per_s:,.0f} events/s; a thread waiting for the GIL counts as busy):")
        prof_doc["wall"] = Profile.read(path).print_wall(run.spy_seconds, n)
    if "gil" in profiles:
        path, run = profiles["gil"]
        print()
        print(f"who holds the GIL (py-spy --gil, {PROFILE_HZ} Hz, one extra run of {label} at "
              f"{run.events_per_s:,.0f} events/s; share of the load's wall time):")
        prof_doc["gil"] = Profile.read(path).print_gil(run.spy_seconds, n)
    if profiles:
        print("  raw stacks: " + ", ".join(str(p.relative_to(common.REPO)) for p, _ in profiles.values())
              + " (collapsed: flamegraph.pl, speedscope)")

    doc = {
        "benchmark": "ingest_http", "events": n, "batch": args.batch, "connections": args.connections,
        "flows": [f.name for f in flows], "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": verdict == "PASS",
        "variants": [{
            "format": res.variant.fmt, "gzip": res.variant.gzip, "fsync": res.variant.fsync,
            "events_per_s": res.med("events_per_s"), "requests_per_s": res.med("requests_per_s"),
            "p50_ms": res.lat(50), "p99_ms": res.lat(99),
            "runs": [{"seconds": r.seconds, "events_per_s": r.events_per_s, "p50_ms": percentile(r.lat_ms, 50),
                      "p99_ms": percentile(r.lat_ms, 99), "server_cpu_s": r.server_cpu_s,
                      "client_cpu_s": r.client_cpu_s, "log_appends": r.log_appends, "throttled": r.throttled}
                     for r in res.runs],
            "direct_append_s": res.direct_s, "direct_events_per_s": n / statistics.median(res.direct_s),
            "stage_s": res.stages,
        } for res in results],
        "profile": prof_doc or None, "load_average_1min": list(args.load),
        "machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    common.write_result("ingest_http", doc)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; the server and the load generators were stopped") from None
