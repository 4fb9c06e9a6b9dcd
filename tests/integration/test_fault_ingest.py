"""Faults and abuse on the ingest path of a real ``fluvial serve`` on loopback.

* a hostile device posts out-of-range integers, huge seqs, times beyond 64 bits, deep
  nesting and malformed bodies at full speed beside honest devices that post and retry:
  every event acknowledged to anyone is in the log and in the view exactly once, every
  bad event is refused with its path and dead-lettered, ``/healthz`` stays ok;
* a refused huge ``seq`` leaves de-duplication on and shutdown clean (snapshots written);
* query parameters beyond 64 bits are a 400, not a 500;
* the disk fills up while devices post (a small tmpfs when this machine lets the test
  mount one, which fills the SQLite view store too, and an ``ENOSPC`` injected into the
  server's ``os.write`` in any case): 507 with ``Retry-After`` and ``/healthz`` degraded
  while full (on the tmpfs: the speed layer cannot commit, and says why), ingest and the
  speed layer recover by themselves once space returns, nothing acknowledged lost,
  nothing stored twice, the view equal to a brute force over the acknowledged events.
  Without a tmpfs (not root) that variant skips, and fails under ``FLUVIAL_REQUIRE_SERVICES=1``.

The log is read back from the data directory; counts are compared with exactly what
was acknowledged. Each test prints its seed (``FLUVIAL_TEST_SEED=<n>`` reproduces it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import pytest

import fluvial
from fluvial.events import Event
from fluvial.log import DeadLetterLog
from fluvial.log.dedup import DedupState
from fluvial.log.limits import MAX_DEPTH
from fluvial.testing.brute import split_late

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_proc import EXAMPLES, ServerProcess

pytestmark = pytest.mark.services

T0 = 1_700_000_000_000
JSON, MSGPACK = "application/json", "application/msgpack"
RETRYABLE = (0, 429, 503, 507)  # 0: the connection failed
WINDOW_MS, ALLOWED_LATENESS_MS = 60_000, 30_000  # examples/device_stats.py
REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"  # as tests/conftest.py


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {value} (FLUVIAL_TEST_SEED={value} reproduces it)")
    return value


@contextlib.contextmanager
def serving(srv: ServerProcess) -> Iterator[ServerProcess]:
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Answer:
    status: int                 # 0: no answer (connection error)
    headers: dict[str, str]
    body: dict[str, Any]


def post(port: int, body: bytes, ctype: str) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/events", body=body, headers={"Content-Type": ctype})
        response = conn.getresponse()
        raw = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, json.loads(raw) if raw else {})
    except (OSError, http.client.HTTPException):
        return Answer(0, {}, {})
    finally:
        conn.close()


def reading(device: str, seq: int, ts: int, **extra: Any) -> dict[str, Any]:
    return {"device": device, "kind": "reading", "ts": ts, "seq": seq,
            "payload": {"kind": "temp", "value": float(seq % 97), **extra}}


def stored_events(data_dir: Path) -> list[Event]:
    with fluvial.open(data_dir) as ws:
        log = ws.log
        return [e for p in range(log.partitions) for e in log.read(p, 0).events]


@dataclass
class Device:
    """An honest device: posts batches of its readings, retries a batch until it is answered 200."""

    name: str
    rng: random.Random
    clock: Callable[[], int]
    next_seq: int = 0
    sent: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    refusals: list[Answer] = field(default_factory=list)
    gave_up: int = 0            # batches never acknowledged (after 200 tries)
    error: BaseException | None = None

    def run(self, port: int, stop: list[float]) -> None:
        """Post until ``time.monotonic() >= stop[0]`` (the last batch is retried to its answer)."""
        try:
            while time.monotonic() < stop[0]:
                self.post_one(port)
        except BaseException as exc:
            self.error = exc

    def post_one(self, port: int) -> None:
        seqs = list(range(self.next_seq, self.next_seq + self.rng.randrange(1, 40)))
        self.next_seq = seqs[-1] + 1
        events = [reading(self.name, s, self.clock()) for s in seqs]
        self.sent.update(seqs)
        fmt = self.rng.choice([JSON, MSGPACK])
        body = msgspec.json.encode(events) if fmt == JSON else msgspec.msgpack.encode(events)
        for _ in range(200):  # the same (device, seq) until acknowledged
            answer = post(port, body, fmt)
            self.statuses[answer.status] += 1
            if answer.status == 200:
                assert answer.body["accepted"] + answer.body["duplicates"] == len(events), answer.body
                assert answer.body["rejected"] == [], answer.body
                self.acked.update(seqs)
                return
            assert answer.status in RETRYABLE, answer
            if answer.status:
                self.refusals.append(answer)
            time.sleep(min(float(answer.headers.get("retry-after", "0.05")), 0.3))
        self.gave_up += 1


# -- a hostile device beside honest ones ------------------------------------------------------------


def nested_json(depth: int) -> bytes:
    return b'{"n":' * depth + b"1" + b"}" * depth


@dataclass
class Hostile:
    """Posts bodies mixing its good readings with events the log cannot store, and worse."""

    rng: random.Random
    clock: Callable[[], int]
    name: str = "hostile"
    next_seq: int = 0
    acked: set[int] = field(default_factory=set)
    expected_letters: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)   # answers that were not what they should be
    error: BaseException | None = None

    def bad(self, i: int) -> tuple[dict[str, Any], str, str]:
        """A bad event (seq far from the good ones), the content type that can carry it, the path refused."""
        r, seq, ts = self.rng.randrange(1000), 10**9 + i, self.clock()
        return self.rng.choice([
            (reading(self.name, seq, 2**63 + r), JSON, "$.ts"),
            (reading(self.name, seq, 2**70 + r), JSON, "$.ts"),
            (reading(self.name, seq, -(2**63) - 1 - r), JSON, "$.ts"),
            (reading(self.name, seq, 2**64 - 1 - r), MSGPACK, "$.ts"),
            (reading(self.name, 2**63 + r, ts), self.rng.choice([JSON, MSGPACK]), "$.seq"),
            (reading(self.name, 2**64 + r, ts), JSON, "$.seq"),
            (reading(self.name, 2**70 + r, ts), JSON, "$.seq"),
            (reading(self.name, seq, ts, a={"b": [0, 2**64 + r]}), JSON, "$.payload.a.b[1]"),
            (reading(self.name, seq, ts, a={"b": -(2**63) - 1 - r}), JSON, "$.payload.a.b"),
            ({**reading(self.name, seq, ts), "payload": {"kind": "t", "value": 1.0, "deep": "@"}}, JSON,
             "$.payload.deep.n.n"),
        ])

    def run(self, port: int, stop: list[float]) -> None:
        try:
            i = 0
            while time.monotonic() < stop[0]:
                i += 1
                what = self.rng.random()
                if what < 0.1:
                    self.unreadable(port, i)
                else:
                    self.mixed(port, i, all_bad=what < 0.2)
        except BaseException as exc:
            self.error = exc

    def mixed(self, port: int, i: int, *, all_bad: bool) -> None:
        bad, ctype, path = self.bad(i)
        good = [] if all_bad else [reading(self.name, self.next_seq + k, self.clock())
                                   for k in range(self.rng.randrange(1, 5))]
        events = [*good]
        at = self.rng.randrange(len(events) + 1)
        events.insert(at, bad)
        body = msgspec.json.encode(events) if ctype == JSON else msgspec.msgpack.encode(events)
        body = body.replace(b'"deep":"@"', b'"deep":' + nested_json(MAX_DEPTH + 20))
        answer = post(port, body, ctype)
        self.answers[answer.status] += 1
        if answer.status == 200:
            self.acked.update(e["seq"] for e in good)
        self.next_seq += len(good)
        rejected = answer.body.get("rejected")
        if (answer.status != (422 if all_bad else 200) or rejected is None or len(rejected) != 1
                or rejected[0]["index"] != at or not rejected[0]["reason"].startswith(path)
                or answer.body["accepted"] + answer.body["duplicates"] != len(good)):
            self.problems.append(f"{path} at {at} of {len(events)}: {answer.status} {answer.body}"[:300])
        else:
            self.expected_letters += 1

    def unreadable(self, port: int, i: int) -> None:
        event = msgspec.json.encode([reading(self.name, 10**9 + i, self.clock())])
        body = self.rng.choice([event[:-7], event.replace(b'"temp"', b"[" * 10_000 + b"]" * 10_000)])
        answer = post(port, body, JSON)
        self.answers[answer.status] += 1
        if answer.status == 400:
            self.expected_letters += 1  # kept whole, as received
        else:
            self.problems.append(f"unreadable body: {answer.status} {answer.body}"[:300])


def test_hostile_device_cannot_cost_honest_devices_their_events(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()

    def clock() -> int:  # event times close together: nothing is late for the speed layer
        return T0 + int((time.monotonic() - started) * 1000)

    honest = [Device(f"honest-{k}", random.Random(rng.random()), clock) for k in range(4)]
    hostile = Hostile(random.Random(rng.random()), clock)
    srv = ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"])
    with serving(srv):
        stop = [time.monotonic() + 3.0]
        runners: list[Device | Hostile] = [*honest, hostile]
        threads = [threading.Thread(target=d.run, args=(srv.port, stop)) for d in runners]
        for t in threads:
            t.start()
        health: Counter[int] = Counter()
        while any(t.is_alive() for t in threads):
            health[srv.request("GET", "/healthz")[0]] += 1
            time.sleep(0.1)
        for t in threads:
            t.join()
        srv.wait_caught_up(timeout=60)
        rows = srv.get("/v1/views/device_stats")["rows"]
        final_health = srv.request("GET", "/healthz")
    print(f"honest statuses {[dict(d.statuses) for d in honest]}, hostile answers {dict(hostile.answers)}, "
          f"healthz {dict(health)}")
    assert [d.error for d in runners if d.error] == []
    events = stored_events(srv.data_dir)
    per_pair = Counter((e.device, e.seq) for e in events)
    for d in honest:
        stored = {seq for device, seq in per_pair if device == d.name}
        assert d.acked <= stored, f"{d.name}: {len(d.acked - stored)} acknowledged events lost"
    assert max(per_pair.values()) == 1, "an event was stored twice"
    for d in honest:  # a bad event never fails an honest request: every answer was 200 at once
        assert set(d.statuses) == {200}, (d.name, d.statuses, d.refusals[:3])
    assert hostile.problems == [], hostile.problems[:5]
    assert set(health) == {200} and final_health[0] == 200, (health, final_health)
    assert hostile.expected_letters >= 20 and len(hostile.acked) >= 20  # the abuse did happen
    for name, acked in [*((d.name, d.acked) for d in honest), (hostile.name, hostile.acked)]:
        stored = {seq for device, seq in per_pair if device == name}
        assert stored == acked, f"{name}: lost {sorted(acked - stored)[:9]}, not acked {sorted(stored - acked)[:9]}"
    # the view counts each of them once too
    counted: Counter[str] = Counter()
    for row in rows:
        counted[row["key"][0]] += row["value"]["count"]
    assert counted == Counter(e.device for e in events)
    # every refused event and unreadable body of the hostile device is dead-lettered, with its reason
    with DeadLetterLog.open(srv.data_dir / "dead-letters", readonly=True) as dl:
        letters = [d for d in dl.read() if b"hostile" in d.raw]
    assert len(letters) == hostile.expected_letters
    for letter in letters:  # an event refused with the path of its problem, or a body kept whole
        assert letter.reason.startswith("400: ") or (letter.reason.startswith("event ") and ": $." in letter.reason), \
            letter.reason


# -- a refused huge seq ------------------------------------------------------------------------------


def test_refused_huge_seq_keeps_dedup_on_and_shutdown_clean(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    with serving(srv):
        assert srv.post_events([reading("d", 5, T0)]) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
        status, body = srv.post_events([reading("d", 2**70, T0)])
        assert status == 422 and body["rejected"][0]["reason"].startswith("$.seq: "), body
        assert srv.post_events([reading("d", 6, T0)])[1]["accepted"] == 1
        assert srv.post_events([reading("d", 6, T0), reading("d", 5, T0)])[1]["duplicates"] == 2
    output = srv.output()
    assert "Application shutdown failed" not in output and "Traceback" not in output, output[-3000:]
    assert sorted(e.seq for e in stored_events(srv.data_dir)) == [5, 6]
    with fluvial.open(srv.data_dir) as ws:
        ends = ws.log.end_offsets()
    for p, end in enumerate(ends):  # the clean shutdown wrote every partition's de-duplication snapshot
        snapshot = DedupState.load(srv.data_dir / "log" / f"p-{p:04d}" / "dedup.snapshot")
        assert snapshot is not None and snapshot[1] == end, (p, snapshot and snapshot[1], end)


# -- query parameters beyond 64 bits ---------------------------------------------------------------

BIG = "99999999999999999999999"


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("viewer"), flows=[EXAMPLES / "device_stats.py"])
    with serving(srv):
        yield srv


@pytest.mark.parametrize(("query", "error"), [
    (f"from={BIG}", f"bad query parameter: from={BIG} is not a time the views hold: epoch milliseconds go from "),
    (f"to=-{BIG}", f"bad query parameter: to=-{BIG} is not a time the views hold"),
    ("from=9223372036854775808", "bad query parameter: from=9223372036854775808 is not a time the views hold"),
    ("to=" + "9" * 5000, "bad query parameter: to=999999999999999999999999999999... is not a time"),
    (f"version={BIG}", f"bad query parameter: version={BIG} is not a version: versions go from 1 to "),
    (f"version=-{BIG}", f"bad query parameter: version=-{BIG} is not a version"),
    ("version=0", "bad query parameter: version=0 is not a version: versions go from 1 to 9223372036854775807"),
    ("key=" + "[" * 5000 + "]" * 5000, "bad query parameter: key is nested too deeply"),
], ids=["from", "to-negative", "from-2**63", "to-5000-digits", "version", "version-negative", "version-0",
        "key-deep"])
def test_query_parameters_beyond_64_bits_are_400(viewer: ServerProcess, query: str, error: str) -> None:
    status, body = viewer.request("GET", f"/v1/views/device_stats?{query}")
    answer = json.loads(body)
    assert (status, answer["status"]) == (400, 400) and answer["error"].startswith(error), answer
    assert viewer.request("GET", "/healthz")[0] == 200


def test_largest_query_parameters_still_answer(viewer: ServerProcess) -> None:
    top = 2**63 - 1
    assert viewer.get(f"/v1/views/device_stats?from=-{top + 1}&to={top}")["rows"] == []
    status, body = viewer.request("GET", f"/v1/views/device_stats?version={top}")
    assert status == 404 and f"has no version {top}" in json.loads(body)["error"]  # as any version it lacks


# -- the disk fills up, then frees ----------------------------------------------------------------

HOOK = '''"""Test-only (see tests/integration/test_fault_ingest.py): os.write on files under a root
fails with ENOSPC while a flag file exists, as on a full disk."""
import errno, os
_flag, _root, _write = os.environ["FLUVIAL_TEST_FULL_FLAG"], os.environ["FLUVIAL_TEST_FULL_ROOT"], os.write
def write(fd, data):
    if os.path.exists(_flag):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(_root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write(fd, data)
os.write = write
'''


class Disk:
    """Where the server's data directory lives, and how to fill and free that disk."""

    def __init__(self, tmp_path: Path, kind: str) -> None:
        self.kind = kind
        self.root = tmp_path / "disk"
        self.root.mkdir()
        self.flag = tmp_path / "disk-full"
        self.env: dict[str, str] = {}
        if kind == "tmpfs":
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(self.root)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                why = f"cannot mount a tmpfs here ({done.stderr.strip()})"
                if REQUIRE_SERVICES:  # only a real small file system fills the view store (SQLite) too
                    pytest.fail(f"{why}; FLUVIAL_REQUIRE_SERVICES=1 needs it (run the tests as root)")
                pytest.skip(f"{why}; the injected variant runs")
        else:
            hook = tmp_path / "hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(HOOK)
            self.env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                        "FLUVIAL_TEST_FULL_FLAG": str(self.flag), "FLUVIAL_TEST_FULL_ROOT": str(self.root)}

    def fill(self) -> None:
        if self.kind != "tmpfs":
            self.flag.touch()
            return
        with open(self.root / "filler", "wb", buffering=0) as f:
            chunk = bytes(1 << 16)
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk)
        assert os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize < 1 << 16

    def free(self) -> None:
        self.flag.unlink(missing_ok=True)
        (self.root / "filler").unlink(missing_ok=True)

    def release(self) -> None:
        if self.kind == "tmpfs" and subprocess.run(["umount", str(self.root)]).returncode != 0:
            subprocess.run(["umount", "-l", str(self.root)])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll ``check`` until true (fails after ``timeout``); return the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def served_stats(srv: ServerProcess) -> dict[Any, dict[str, Any]]:
    rows = srv.get("/v1/views/device_stats")["rows"]
    return {(tuple(r["key"]), tuple(r["window"])): r["value"] for r in rows}


def brute_stats(events: list[Event]) -> dict[Any, dict[str, Any]]:
    """``examples/device_stats.py`` by brute force: Stats per (device, kind) and 1-minute window."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for e in events:
        start = e.ts - e.ts % WINDOW_MS
        groups[((e.device, e.payload["kind"]), (start, start + WINDOW_MS))].append(e.payload["value"])
    return {k: {"count": len(v), "min": min(v), "max": max(v), "mean": float(sum(map(Fraction, v)) / len(v))}
            for k, v in groups.items()}


def speed_problems(srv: ServerProcess) -> list[str]:
    return [p for p in json.loads(srv.request("GET", "/healthz")[1])["problems"] if p.startswith("speed layer")]


@pytest.mark.parametrize("kind", ["tmpfs", "injected"])
def test_full_disk_is_507_and_ingest_and_speed_layer_recover_by_themselves(tmp_path: Path, seed: int,
                                                                          kind: str) -> None:
    """On the tmpfs the view store fills too: the speed layer cannot commit, /healthz says why,
    and it commits again by itself once space returns. With ``os.write`` failing only the log is
    full (SQLite writes below Python): the speed layer keeps committing."""
    rng = random.Random(seed)
    disk = Disk(tmp_path, kind)
    try:
        srv = ServerProcess(disk.root, flows=[EXAMPLES / "device_stats.py"],
                            config="[log]\nsegment_bytes = 262144\n", env=disk.env)
        srv.log_file = tmp_path / "server.log"  # not on the full disk
        started = time.monotonic()

        def clock() -> int:
            return T0 + int((time.monotonic() - started) * 1000)

        devices = [Device(f"dev-{k}", random.Random(rng.random()), clock) for k in range(3)]
        with serving(srv):
            stop = [float("inf")]  # the devices post until told to stop
            threads = [threading.Thread(target=d.run, args=(srv.port, stop)) for d in devices]
            for t in threads:
                t.start()
            time.sleep(0.5)
            disk.fill()
            wait_for("a device is answered 507", lambda: any(d.statuses[507] for d in devices))
            status, body = srv.request("GET", "/healthz")
            health = json.loads(body)
            assert status == 503 and health["status"] == "degraded", health
            (problem,) = [p for p in health["problems"] if p.startswith("log writer")]
            assert "No space left on device (ENOSPC)" in problem and "free space" in problem, problem
            assert str(disk.root) not in body.decode() and str(tmp_path) not in body.decode()
            if kind == "tmpfs":  # the micro-batches of what the log took before it filled cannot commit
                wait_for("/healthz says the speed layer cannot commit", lambda: speed_problems(srv) != [])
                (problem,) = speed_problems(srv)
                assert problem.startswith("speed layer device_stats: ") and "database or disk is full" in problem \
                    and "free space" in problem and "cannot rollback" not in problem, problem
            time.sleep(2.0 if kind == "tmpfs" else 0.5)  # the speed layer retries (every 1 s) while full
            failures = srv.get("/v1/metrics")["speed_layer"]["device_stats"]["errors"]
            disk.free()
            freed = time.monotonic()
            acked_before = sum(len(d.acked) for d in devices)
            took = wait_for("/healthz is ok again", lambda: srv.request("GET", "/healthz")[0] == 200)
            wait_for("devices are acknowledged again", lambda: sum(len(d.acked) for d in devices) > acked_before)
            acked_at = time.monotonic() - freed
            wait_for("the speed layer commits what came after space returned", lambda: (
                srv.get("/v1/metrics")["speed_layer"]["device_stats"]["micro_batches"] > 0
                and speed_problems(srv) == []), timeout=20 - (time.monotonic() - freed))
            speed_took = time.monotonic() - freed
            time.sleep(0.3)
            stop[0] = 0
            for t in threads:
                t.join()
            srv.wait_caught_up(timeout=60)
            served = served_stats(srv)
            late = srv.get("/v1/views")
        print(f"{kind}: after space returned, /healthz ok (log writer and speed layer) in {took:.2f} s, devices "
              f"acknowledged by {acked_at:.2f} s, the speed layer committing by {speed_took:.2f} s; {failures} "
              f"speed-layer failures while full; statuses {[dict(d.statuses) for d in devices]}")
        assert [d.error for d in devices if d.error] == [] and [d.gave_up for d in devices] == [0] * len(devices)
        full = [a for d in devices for a in d.refusals if a.status == 507]
        assert full and all(a.headers.get("retry-after", "").isdigit() for a in full)
        assert all("the disk is full" in a.body["error"] and "send them again" in a.body["error"] for a in full)
        assert all(a.status == 507 for d in devices for a in d.refusals), "only the full disk refused"
        if kind == "tmpfs":
            assert failures >= 2 and took < 10 and speed_took < 10, (failures, took, speed_took)
        else:  # SQLite does not write through os.write: only the log was full
            assert failures == 0, failures

        events = stored_events(srv.data_dir)
        per_pair = Counter((e.device, e.seq) for e in events)
        assert max(per_pair.values()) == 1, "an event was stored twice"
        for d in devices:
            stored = {seq for device, seq in per_pair if device == d.name}
            assert d.acked <= stored, f"{d.name}: acknowledged but lost {sorted(d.acked - stored)[:10]}"
            assert stored == d.acked  # every batch was retried until acknowledged: nothing more stored
        # the served view: a brute force over exactly the acknowledged events (in log order: lateness)
        acked = {(d.name, s) for d in devices for s in d.acked}
        on_time, too_late = split_late([e for e in events if (e.device, e.seq) in acked], partitions=4,
                                       lateness_ms=ALLOWED_LATENESS_MS)
        assert len(on_time) + len(too_late) == len(acked)
        assert served == brute_stats(on_time)
        (info,) = [v for v in late["views"] if v["name"] == "device_stats"]
        assert info["late_events"] == len(too_late), (info["late_events"], len(too_late))
    finally:
        disk.free()
        disk.release()
