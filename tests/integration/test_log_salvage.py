"""Damage on disk under a real ``fluvial serve``: /healthz tells it, verify finds it, salvage repairs it.

Events are posted to a real server (loopback, child process), the server is
stopped, and one random bit (seeded; ``FLUVIAL_TEST_SEED=<n>`` reproduces a
run) is flipped in the payload of a random batch, or several bytes of a batch
header are changed, located with the frame layout that ``segment.py``
documents. Then, with real processes throughout: the server starts on a damaged
sealed segment (payload or header) and says so in its log and in /healthz (no
file paths), ingest and the speed layer keep working, batch runs fail and show
there too; or it refuses to start on a damaged active segment with a message
naming the two commands. After ``fluvial log salvage`` the server serves views
equal to a brute force over exactly the events that survived: acknowledged
events minus the damaged batch.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from server_proc import EXAMPLES, ROOT, ServerProcess

from fluvial.log import LocalLog

LAYOUT = struct.Struct("<4sQIIqqqII")  # segment.py: magic, base, count, length, append_ms, min/max ts, crc, hcrc
CONFIG = "[log]\nsegment_bytes = 4096\n"  # small segments: several per partition
WINDOW_MS = 60_000  # examples/device_stats.py
ADVICE = "run `fluvial log verify` then `fluvial log salvage`"
Event = dict[str, Any]



@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (FLUVIAL_TEST_SEED={seed} reproduces it)")
    return random.Random(seed)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(**kwargs: Any) -> ServerProcess:
        srv = ServerProcess(tmp_path, config=CONFIG, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        print(f"--- {srv.log_file.name} ---\n{srv.output()[-3000:]}")


def fluvial(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


# -- events and brute force ------------------------------------------------------------------------

class Fleet:
    def __init__(self, rng: random.Random) -> None:
        self.rng, self.seq = rng, defaultdict(int)
        self.clock = 1_704_067_200_000 + rng.randrange(10**10)

    def readings(self, n: int) -> list[Event]:
        """Never late (jitter below the 30 s allowed lateness), so the speed layer counts them all."""
        out = []
        for _ in range(n):
            device = f"dev-{self.rng.randrange(6)}"
            self.seq[device] += 1
            self.clock += self.rng.randrange(800)
            out.append({"device": device, "kind": "reading", "seq": self.seq[device],
                        "ts": self.clock + self.rng.randrange(10_000),
                        "payload": {"kind": self.rng.choice(["temp", "hum"]),
                                    "value": float(self.rng.randint(-40, 60))}})
        return out


def post(srv: ServerProcess, events: list[Event], rng: random.Random) -> None:
    """In small requests: many small batches, so several segments per partition."""
    i = 0
    while i < len(events):
        part = events[i:i + rng.randint(3, 25)]
        status, body = srv.post_events(part)
        assert (status, body["accepted"]) == (200, len(part)), body
        i += len(part)


def brute_stats(events: list[Event]) -> dict[Any, Any]:
    groups: dict[Any, list[float]] = defaultdict(list)
    for e in events:
        start = e["ts"] - e["ts"] % WINDOW_MS
        groups[((e["device"], e["payload"]["kind"]), (start, start + WINDOW_MS))].append(e["payload"]["value"])
    return {k: {"count": len(v), "min": min(v), "max": max(v), "mean": float(sum(map(Fraction, v)) / len(v))}
            for k, v in groups.items()}


def served_stats(srv: ServerProcess) -> dict[Any, Any]:
    rows = srv.get("/v1/views/device_stats")["rows"]
    return {(tuple(r["key"]), tuple(r["window"])): r["value"] for r in rows}


def stored_events(data_dir: Path) -> dict[tuple[int, int], Event]:
    """``(partition, offset) -> event`` of the log as it is on disk."""
    out = {}
    with LocalLog.open(data_dir / "log", readonly=True) as log:
        for p, end in enumerate(log.end_offsets()):
            for o, ev in enumerate(log.read(p, 0, max_records=end).events):
                out[(p, o)] = {"device": ev.device, "kind": ev.kind, "seq": ev.seq, "ts": ev.ts, "payload": ev.payload}
    return out


def flip_payload_bit(rng: random.Random, data_dir: Path, *, active: bool) -> tuple[int, int, int]:
    """Flip a bit in the payload of a random batch of a sealed segment (or, ``active``, of the
    last segment but not its last batch); return (partition, first offset, records)."""
    choices = []
    for pdir in sorted((data_dir / "log").glob("p-*")):
        segs = sorted(pdir.glob("*.seg"))
        for seg in segs[-1:] if active else segs[:-1]:
            data, pos, found = seg.read_bytes(), 0, []
            while pos < len(data):
                _, base, count, length, *_ = LAYOUT.unpack_from(data, pos)
                found.append((int(pdir.name[2:]), seg, pos, pos + LAYOUT.size + length, base, count))
                pos += LAYOUT.size + length
            choices += found[:-1] if active else found
    p, seg, pos, end, base, count = rng.choice(choices)
    data = bytearray(seg.read_bytes())
    byte = rng.randrange(pos + LAYOUT.size, end)
    data[byte] ^= 1 << rng.randrange(8)
    seg.write_bytes(bytes(data))
    print(f"flipped a bit of byte {byte} of partition {p} {seg.name}: batch of offsets [{base}, {base + count})")
    return p, base, count


def scramble_header(rng: random.Random, data_dir: Path) -> tuple[int, int, int]:
    """Change several bytes of the header of a random batch of a sealed segment (more than one bit:
    no checksum repairs it); return (partition, first offset, records)."""
    choices = []
    for pdir in sorted((data_dir / "log").glob("p-*")):
        for seg in sorted(pdir.glob("*.seg"))[:-1]:
            data, pos = seg.read_bytes(), 0
            while pos < len(data):
                _, base, count, length, *_ = LAYOUT.unpack_from(data, pos)
                choices.append((int(pdir.name[2:]), seg, pos, base, count))
                pos += LAYOUT.size + length
    p, seg, pos, base, count = rng.choice(choices)
    data = bytearray(seg.read_bytes())
    where = sorted(rng.sample(range(pos, pos + LAYOUT.size), rng.randint(2, 16)))
    for byte in where:
        data[byte] ^= rng.randrange(1, 256)
    seg.write_bytes(bytes(data))
    print(f"changed bytes {where} of partition {p} {seg.name}: the header of the batch at byte {pos}, "
          f"offsets [{base}, {base + count})")
    return p, base, count


def health(srv: ServerProcess) -> dict[str, Any]:
    status, raw = srv.request("GET", "/healthz")
    body = json.loads(raw)
    assert (status == 200) == (body["status"] == "ok"), (status, body)
    return body  # type: ignore[no-any-return]


def wait_health(srv: ServerProcess, wanted: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = health(srv)
        if any(wanted in p for p in body["problems"]):
            return body
        assert time.monotonic() < deadline, f"/healthz never said {wanted!r}: {body}"
        time.sleep(0.1)


def run_batch(srv: ServerProcess) -> dict[str, Any]:
    status, job = srv.admin("POST", "/v1/views/device_stats/batch")
    assert status == 202, job
    return srv.wait_job(job["id"])  # type: ignore[no-any-return]


# -- the tests -------------------------------------------------------------------------------------

def served_then_stopped(serve: Callable[..., ServerProcess], rng: random.Random
                        ) -> tuple[Fleet, ServerProcess, list[Any], dict[tuple[int, int], Event]]:
    """A server that took a few hundred readings, stopped: the fleet, the server, the readings,
    and the log's events by (partition, offset), checked to be exactly what was acknowledged."""
    fleet = Fleet(rng)
    srv = serve(flows=[EXAMPLES / "device_stats.py"]).start()
    first = fleet.readings(rng.randint(400, 700))
    post(srv, first, rng)
    srv.wait_caught_up()
    srv.stop()
    stored = stored_events(srv.data_dir)
    assert sorted(map(json.dumps, stored.values())) == sorted(map(json.dumps, first))  # exactly what was acked
    return fleet, srv, first, stored


def test_damaged_sealed_segment_degrades_health_until_salvaged(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    fleet, srv, _, stored = served_then_stopped(serve, rng)
    data_dir = srv.data_dir
    p, base, count = flip_payload_bit(rng, data_dir, active=False)

    srv.start()  # a damaged sealed segment does not stop the server ...
    body = wait_health(srv, f"partition {p}: damaged batch in a sealed segment (offsets [{base}, {base + count}))")
    assert body["status"] == "degraded" and any(p.endswith(ADVICE) for p in body["problems"])
    assert str(tmp_path) not in json.dumps(body) and ".seg" not in json.dumps(body)  # no paths for anyone
    more = fleet.readings(rng.randint(20, 60))
    post(srv, more, rng)  # ... and ingest keeps working
    job = run_batch(srv)
    assert job["status"] == "failed" and "checksum mismatch" in job["error"], job
    wait_health(srv, "batch layer device_stats: the last run failed; the log it reads is damaged")

    verify = fluvial(data_dir, "log", "verify", "--format", "json")  # alongside the running server
    assert verify.returncode == 1, verify.stderr
    [problem] = [q for part in json.loads(verify.stdout)["partitions"] for q in part["problems"]]
    assert (problem["partition"], problem["offsets"], problem["lost"]) == (p, [base, base + count], count)
    refused = fluvial(data_dir, "log", "salvage")
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    srv.stop()

    salvaged = fluvial(data_dir, "log", "salvage", "--format", "json")
    assert salvaged.returncode == 0, salvaged.stdout + salvaged.stderr
    assert json.loads(salvaged.stdout)["records_lost"] == count
    survivors = [e for (q, o), e in stored.items() if not (q == p and base <= o < base + count)] + more
    srv.start()
    assert health(srv)["status"] == "ok"
    job = run_batch(srv)
    assert job["status"] == "done", job
    srv.wait_caught_up()
    assert served_stats(srv) == brute_stats(survivors)
    assert health(srv)["status"] == "ok"


def test_damaged_header_in_a_sealed_segment_does_not_stop_the_server(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    fleet, srv, first, stored = served_then_stopped(serve, rng)
    data_dir = srv.data_dir
    p, base, count = scramble_header(rng, data_dir)

    srv.start()  # the log opens: the damaged batch is stepped around, loudly
    assert f"offsets [{base}, {base + count}) cannot be read" in srv.output(), srv.output()[-3000:]
    body = wait_health(srv, f"partition {p}: damaged batch in a sealed segment (offsets [{base}, {base + count}))")
    assert body["status"] == "degraded" and any(q.endswith(ADVICE) for q in body["problems"])
    assert str(tmp_path) not in json.dumps(body) and ".seg" not in json.dumps(body)
    more = fleet.readings(rng.randint(20, 60))
    post(srv, more, rng)  # appends go on, and the speed layer (past the damage) counts them
    srv.wait_caught_up()
    assert served_stats(srv) == brute_stats(first + more)  # counted before the damage: still in the view
    job = run_batch(srv)  # the batch layer reads the whole log: it reaches the damage
    assert job["status"] == "failed" and f"offsets [{base}, {base + count}) cannot be read" in job["error"], job
    verify = fluvial(data_dir, "log", "verify", "--format", "json")
    assert verify.returncode == 1, verify.stderr
    [problem] = [q for part in json.loads(verify.stdout)["partitions"] for q in part["problems"]]
    assert (problem["partition"], problem["offsets"], problem["lost"]) == (p, [base, base + count], count)
    srv.stop()

    salvaged = fluvial(data_dir, "log", "salvage", "--format", "json")
    assert salvaged.returncode == 0, salvaged.stdout + salvaged.stderr
    assert json.loads(salvaged.stdout)["records_lost"] == count
    # every record after the damage, in its segment and in later ones, is still there
    survivors = [e for (q, o), e in stored.items() if not (q == p and base <= o < base + count)] + more
    after = {k: e for k, e in stored_events(data_dir).items() if e["kind"] != "fluvial.lost"}
    assert sorted(map(json.dumps, after.values())) == sorted(map(json.dumps, survivors))
    srv.start()
    assert health(srv)["status"] == "ok"
    job = run_batch(srv)
    assert job["status"] == "done", job
    srv.wait_caught_up()
    assert served_stats(srv) == brute_stats(survivors)


def test_damaged_active_segment_refuses_start_until_salvaged(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    fleet = Fleet(rng)
    writer = serve().start()  # no flow yet: nothing has counted the events before the damage
    events = fleet.readings(rng.randint(300, 600))
    post(writer, events, rng)
    writer.stop()
    data_dir = writer.data_dir
    stored = stored_events(data_dir)
    p, base, count = flip_payload_bit(rng, data_dir, active=True)

    srv = serve(flows=[EXAMPLES / "device_stats.py"])
    with pytest.raises(RuntimeError, match="server exited") as refused:
        srv.start()
    message = str(refused.value)
    assert "log verify" in message and "log salvage" in message, message
    stats = fluvial(data_dir, "log", "stats")
    assert stats.returncode == 0, stats.stderr
    damaged = [line for line in stats.stdout.splitlines() if "DAMAGED" in line]
    assert len(damaged) == 1 and damaged[0].startswith(f"{p} ") and "fluvial log verify" in damaged[0]

    salvaged = fluvial(data_dir, "log", "salvage")
    assert salvaged.returncode == 0 and f"{count} records lost" in salvaged.stdout, salvaged.stdout
    srv.start()
    srv.wait_caught_up()
    survivors = [e for (q, o), e in stored.items() if not (q == p and base <= o < base + count)]
    assert served_stats(srv) == brute_stats(survivors)
    assert health(srv)["status"] == "ok"


# -- salvage killed at every step ------------------------------------------------------------------

_KILLED_AT = """
import os, signal, sys
import fluvial.log.salvage as salvage
steps, limit = [0], int(sys.argv[2])

def step(real):
    def wrapped(*args, **kwargs):
        steps[0] += 1
        if steps[0] > limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped

os.replace, os.link, os.unlink = step(os.replace), step(os.link), step(os.unlink)
salvage._write_synced = step(salvage._write_synced)
salvage.salvage(sys.argv[1])
"""


def _damaged_log(root: Path, rng: random.Random
                 ) -> tuple[dict[tuple[int, int], Any], set[tuple[int, int]], list[bytes]]:
    """A log with damaged batches in two sealed segments; (stored, lost positions, damaged batch bytes)."""
    from fluvial.events import Event

    stored: dict[tuple[int, int], Any] = {}
    with LocalLog.open(root / "log", partitions=2, segment_bytes=1024) as log:
        for i in range(rng.randint(60, 100)):
            events = [Event(device=f"d{rng.randrange(5)}", kind="line", ts=i, seq=i * 10 + j,
                            payload={"text": "x" * rng.randrange(50)}) for j in range(rng.randint(1, 6))]
            for ev, pos in zip(events, log.append(events).positions):
                assert pos is not None
                stored[pos] = ev
    sealed = [seg for pdir in sorted((root / "log").glob("p-*")) for seg in sorted(pdir.glob("*.seg"))[:-1]]
    lost, batches = set(), []
    for seg in rng.sample(sealed, 2):
        data, pos, found = seg.read_bytes(), 0, []
        while pos < len(data):
            _, base, count, length, *_ = LAYOUT.unpack_from(data, pos)
            found.append((pos, pos + LAYOUT.size + length, base, count))
            pos += LAYOUT.size + length
        pos, end, base, count = rng.choice(found)
        damaged = bytearray(data)
        damaged[rng.randrange(pos + LAYOUT.size, end)] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(damaged))
        partition = int(seg.parent.name[2:])
        lost |= {(partition, o) for o in range(base, base + count)}
        batches.append(bytes(damaged[pos:end]))
    return stored, lost, batches


def test_salvage_killed_at_every_step_then_run_again_keeps_exactly_the_intact_records(
        tmp_path: Path, rng: random.Random) -> None:
    import shutil

    from fluvial.log.salvage import salvage

    original = tmp_path / "original"
    stored, lost, batches = _damaged_log(original, rng)
    for limit in range(100):  # the k-th file system change of a salvage is where SIGKILL strikes
        work = tmp_path / f"killed-at-{limit}"
        shutil.copytree(original, work)
        child = subprocess.run([sys.executable, "-c", _KILLED_AT, str(work), str(limit)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60, check=False)
        result = salvage(work)  # what the operator runs next
        assert result.after is None or result.after.intact
        with LocalLog.open(work / "log") as log:  # the writer opens it; lost pairs may be sent again
            got = {(p, o): ev for p, end in enumerate(log.end_offsets())
                   for o, ev in enumerate(log.read(p, 0, max_records=end).events)}
            assert {k for k, ev in got.items() if ev.kind == "fluvial.lost"} == lost, limit
            assert {k: ev for k, ev in got.items() if k not in lost} == {k: ev for k, ev in stored.items()
                                                                        if k not in lost}, limit
            p, o = min(lost)
            assert log.append([stored[(p, o)]]).accepted == 1, limit
        moved = [f.read_bytes() for f in (work / "log-quarantine").glob("*/events/*/*.batch")]
        assert all(b in moved for b in batches), limit
        if child.returncode == 0:
            print(f"salvage makes {limit} file system changes; killed before each of them, then run again")
            break
        assert child.returncode == -9, child.stderr
    else:
        raise AssertionError("salvage never finished")


_WRITER = """
import random, sys
from pathlib import Path
from fluvial.log import LocalLog
from fluvial.events import Event
path, seed = Path(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
with LocalLog.open(path, partitions=3, segment_bytes=8192) as log:
    for i in range(10**6):  # until killed
        log.append([Event(device=f"d{rng.randrange(9)}", kind="line", ts=i, seq=i * 100 + j,
                          payload={"text": "x" * rng.randrange(300)}) for j in range(rng.randint(1, 40))])
        if i == 50:
            (path / "started").touch()
"""


def test_verify_beside_a_writer_finds_nothing(tmp_path: Path, rng: random.Random) -> None:
    """Batches half written, segments rolling, snapshots replaced: none of it is damage."""
    data = tmp_path / "data"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(data / "log"), str(rng.randrange(2**32))],
                              cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not (data / "log" / "started").exists():
            assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
        seen = []
        for _ in range(5):
            verify = fluvial(data, "log", "verify", "--format", "json")
            assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr
            seen.append(json.loads(verify.stdout)["records"])
        assert seen == sorted(seen) and seen[0] > 0, seen
    finally:
        writer.kill()
        writer.wait(10)


# -- placeholders and the Spark runners ------------------------------------------------------------

def test_spark_source_rows_and_runners_skip_placeholders(tmp_path: Path, rng: random.Random,
                                                         spark_ready: None) -> None:
    """A real salvaged log: the Spark source's raw rows hold no placeholder (their offsets are
    gaps), and the Spark stream and batch runners count exactly the surviving events."""
    import operator
    from collections import Counter

    import fluvial as fl
    from fluvial.engine.spark.batch import SparkBatchRunner
    from fluvial.engine.spark.session import SparkConfig
    from fluvial.engine.spark.source import LogRange, LogStreamReader, decode_event
    from fluvial.engine.spark.stream import SparkStreamRunner
    from fluvial.events.lost import LOST_KIND
    from fluvial.log.salvage import salvage

    root = tmp_path / "data"
    stored, lost, _ = _damaged_log(root, rng)
    assert salvage(root).lost == len(lost)
    survivors = {pos: ev for pos, ev in stored.items() if pos not in lost}
    with LocalLog.open(root / "log", readonly=True) as log:
        ends = log.end_offsets()
    rows = [row for p, end in enumerate(ends)
            for row in LogStreamReader({"path": str(root / "log")}).read(LogRange(p, 0, end))]
    assert all(r[3] != LOST_KIND and r[2] != LOST_KIND for r in rows)
    assert {(r[0], r[1]): decode_event(r[6]) for r in rows} == survivors
    kept = [row for p, end in enumerate(ends)  # the runner's own reads keep them: offsets stay consecutive
            for row in LogStreamReader({"path": str(root / "log"), "placeholders": "keep"}).read(LogRange(p, 0, end))]
    assert {(r[0], r[1]) for r in kept if r[3] == LOST_KIND} == lost and len(kept) == sum(ends)

    def pipeline(name: str) -> fl.Pipeline:
        p = fl.Pipeline(name)
        p.from_log().map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view(f"{name}_all")
        p.from_log("line").map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view(f"{name}_line")
        return p

    want = dict(Counter(ev.device for ev in survivors.values()))
    with fl.open(root, writer=True) as ws:
        spark = SparkConfig(master="local[2]")
        SparkStreamRunner(log=ws.log, store=ws.store, spark=spark, batch_interval_ms=0,
                          max_batch_records=40).run(pipeline("stream"), until_caught_up=True)
        SparkBatchRunner(log=ws.log, store=ws.store, spark=spark).run(pipeline("batch"))
        for view in ("stream_all", "stream_line", "batch_all", "batch_line"):
            assert {r.key: r.value for r in ws.store.query(view)} == want, view


def test_export_of_a_salvaged_log_says_what_it_left_out(tmp_path: Path, rng: random.Random) -> None:
    from fluvial.log.salvage import salvage

    root = tmp_path / "data"
    stored, lost, _ = _damaged_log(root, rng)
    assert salvage(root).lost == len(lost)
    done = fluvial(root, "log", "export", "--format", "parquet", str(tmp_path / "export"))
    assert done.returncode == 0, done.stderr
    assert f"exported {len(stored) - len(lost)} events" in done.stdout, done.stdout   # the survivors
    assert f"left out {len(lost)} placeholders of records lost to damage" in done.stdout, done.stdout
