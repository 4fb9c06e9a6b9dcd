"""End-to-end: a real ``fluvial serve`` child process, driven over HTTP on loopback.

Every test generates its events from a printed seed (``seed=N`` in the output
of a failing test; ``FLUVIAL_E2E_SEED=N`` replays it) and computes every
expected row with a plain-Python brute force over the events it posted
(Counter, exact Fraction means, sorted top-10): nothing is hard-coded.

* Lambda: events posted as JSON, NDJSON, MessagePack and gzip show up in the
  merged view within a few micro-batches; a batch run changes nothing visible
  but covers the realtime part; later events are merged on top.
* Late data: readings more than 30 s behind what the speed layer saw are left
  out of the realtime view and counted, and the next batch run includes them.
* kill -9 in the middle of a load whose client retries until acknowledged
  (and resends some acknowledged batches): the view counts every acknowledged
  event exactly once, in the speed layer and after a batch run.
* Kappa: a reprocessing with changed code is seen by readers as the old view
  or the new one, never a mix; dry run, grace period, rollback.
* A clean restart keeps the views and goes on counting.

The tests at the end pin three bugs these tests found (a replay that stopped
before the head of the log, a rolled-back-from version never dropped, and no
version to roll back to after a view's first reprocessing).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from server_proc import EXAMPLES, ServerProcess

SEED = int(os.environ.get("FLUVIAL_E2E_SEED") or random.randrange(2**32))

WINDOW_MS = 60_000            # examples/device_stats.py: 1-minute tumbling windows ...
LATENESS_MS = 30_000          # ... with 30 s allowed lateness
READING_KINDS = ("temp", "hum", "co2")
HASHTAG_WINDOW_MS, HASHTAG_SLIDE_MS = 60_000, 1_000   # examples/hashtag_top10.py
VISIBLE_S = 10.0              # deadline for posted events to show up (batch interval: 100 ms)

Event = dict[str, Any]
Rows = dict[tuple[Any, Any], Any]



@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``fluvial serve`` child processes; each is stopped (and its output shown) at teardown."""
    started: list[ServerProcess] = []

    def start(**kwargs: Any) -> ServerProcess:
        srv = ServerProcess(tmp_path, **kwargs)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
        print(f"--- server output ({srv.log_file.name}) ---\n{srv.output()[-4000:]}")


# -- event generators ------------------------------------------------------------------------------

class Devices:
    """A fleet whose devices number their events: ``(device, seq)`` is unique per event."""

    def __init__(self, rng: random.Random, n: int, prefix: str = "dev") -> None:
        self.rng = rng
        self.names = [f"{prefix}-{i:02d}" for i in range(n)]
        self.next_seq = dict.fromkeys(self.names, 0)

    def event(self, device: str, kind: str, ts: int, payload: dict[str, Any]) -> Event:
        seq = self.next_seq[device]
        self.next_seq[device] = seq + 1
        return {"device": device, "kind": kind, "ts": ts, "seq": seq, "payload": payload}

    def reading(self, device: str, ts: int, kind: str | None = None) -> Event:
        rng = self.rng
        value = rng.uniform(-40.0, 60.0) if rng.random() < 0.7 else float(rng.randint(-40, 60))
        return self.event(device, "reading", ts, {"kind": kind or rng.choice(READING_KINDS), "value": value})

    def readings(self, n: int, start_ms: int, step_ms: int = 250, jitter_ms: int = 10_000) -> list[Event]:
        """``n`` readings in log order, never late: event i is at ``start + i*step + [0, jitter)``
        and ``jitter < allowed lateness``, so no event trails an earlier one by 30 s."""
        return [self.reading(self.rng.choice(self.names), start_ms + i * step_ms + self.rng.randrange(jitter_ms))
                for i in range(n)]


def base_ms(rng: random.Random) -> int:
    """A random epoch-ms start time in 2024-2026, not aligned to a window."""
    return 1_704_067_200_000 + rng.randrange(2 * 365 * 86_400_000)


def chunks(events: list[Event], rng: random.Random, low: int = 20, high: int = 200) -> list[list[Event]]:
    out, i = [], 0
    while i < len(events):
        n = rng.randint(low, high)
        out.append(events[i:i + n])
        i += n
    return out


FORMATS = [("json", False), ("ndjson", False), ("msgpack", False), ("json", True), ("ndjson", True),
           ("msgpack", True)]


def post_all(srv: ServerProcess, events: list[Event], rng: random.Random) -> None:
    """POST ``events`` in several requests, cycling through every body format (and gzip)."""
    for i, part in enumerate(chunks(events, rng)):
        fmt, gz = FORMATS[i % len(FORMATS)]
        status, body = srv.post_events(part, fmt=fmt, gzip=gz)
        assert status == 200, (fmt, gz, body)
        assert body == {"accepted": len(part), "duplicates": 0, "rejected": []}, (fmt, gz, body)


# -- brute forces ----------------------------------------------------------------------------------

def distinct(events: Iterable[Event]) -> list[Event]:
    """The events a log keeps: the first of each ``(device, seq)``."""
    seen: set[tuple[str, int]] = set()
    out = []
    for e in events:
        if (e["device"], e["seq"]) not in seen:
            seen.add((e["device"], e["seq"]))
            out.append(e)
    return out


def brute_stats(events: Iterable[Event]) -> Rows:
    """``device_stats``: per ((device, kind), minute) the count, min, max and exact mean."""
    groups: dict[tuple[Any, Any], list[float]] = defaultdict(list)
    for e in distinct(events):
        start = e["ts"] - e["ts"] % WINDOW_MS
        groups[((e["device"], e["payload"]["kind"]), (start, start + WINDOW_MS))].append(e["payload"]["value"])
    return {k: {"count": len(v), "min": min(v), "max": max(v), "mean": float(sum(map(Fraction, v)) / len(v))}
            for k, v in groups.items()}


def brute_top10(events: Iterable[Event]) -> Rows:
    """``hashtag_top10``: per 60 s window starting on a whole second, the 10 most frequent hashtags."""
    tags = [(e["ts"], w) for e in distinct(events) for w in e["payload"]["text"].lower().split()
            if w.startswith("#")]
    starts = {s for ts, _ in tags for s in range(ts - ts % HASHTAG_SLIDE_MS, ts - HASHTAG_WINDOW_MS,
                                                -HASHTAG_SLIDE_MS)}
    out: Rows = {}
    for s in starts:
        counts = Counter(w for ts, w in tags if s <= ts < s + HASHTAG_WINDOW_MS)
        out[(None, (s, s + HASHTAG_WINDOW_MS))] = [[w, n] for w, n in
                                                   sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    return out


def _hashable(x: Any) -> Any:
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


def as_rows(rows: list[dict[str, Any]]) -> Rows:
    """View rows ``{"key", "window", "value"}`` by (key, window); a (key, window) appears once."""
    out = {(_hashable(r["key"]), _hashable(r["window"])): r["value"] for r in rows}
    assert len(out) == len(rows), "a (key, window) appears in two rows"
    return out


def assert_rows(got: Rows, want: Rows, what: str) -> None:
    if got == want:
        return
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]]
    raise AssertionError(f"{what}: {len(got)} rows, expected {len(want)}; {len(missing)} missing "
                         f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}, {len(wrong)} differ "
                         f"(got, want) {wrong[:3]} [seed={SEED}]")


# -- HTTP helpers ----------------------------------------------------------------------------------

def view(srv: ServerProcess, name: str, query: str = "") -> tuple[int | None, Rows]:
    body = srv.get(f"/v1/views/{name}{query}")
    assert body["view"] == name
    return body["version"], as_rows(body["rows"])


def info(srv: ServerProcess, name: str) -> dict[str, Any]:
    (found,) = [v for v in srv.get("/v1/views")["views"] if v["name"] == name]
    return found  # type: ignore[no-any-return]


def eventually(srv: ServerProcess, name: str, want: Rows, what: str, timeout: float = VISIBLE_S) -> float:
    """Poll the view until it equals ``want``; return how long that took."""
    started = time.monotonic()
    while True:
        _, got = view(srv, name)
        if got == want:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            assert_rows(got, want, f"{what} (after {timeout} s)")
        time.sleep(0.02)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = VISIBLE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s [seed={SEED}]"
        time.sleep(0.02)


def run_batch(srv: ServerProcess, name: str) -> dict[str, Any]:
    status, job = srv.admin("POST", f"/v1/views/{name}/batch")
    assert status == 202, job
    assert job["kind"] == "batch" and job["status"] == "running"
    done = srv.wait_job(job["id"])
    assert done["status"] == "done", done
    return done  # type: ignore[no-any-return]


def assert_healthy(srv: ServerProcess) -> None:
    status, body = srv.request("GET", "/healthz")
    assert status == 200, body
    for name, runner in srv.get("/v1/metrics")["speed_layer"].items():
        assert runner["errors"] == 0, (name, runner)
    assert "Traceback" not in srv.output(), srv.output()[-4000:]


# -- 1. Lambda over HTTP -----------------------------------------------------------------------------

def test_lambda_merged_view_equals_brute_force_before_and_after_batch(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=100)
    fleet = Devices(rng, 12)
    start = base_ms(rng)
    first = fleet.readings(1200, start)
    post_all(srv, first, rng)
    # a device retrying a request it sent already: acknowledged, not stored again
    again = first[100:160]
    status, body = srv.post_events(again, fmt="msgpack", gzip=True)
    assert (status, body) == (200, {"accepted": 0, "duplicates": len(again), "rejected": []})
    want = brute_stats(first + again)
    took = eventually(srv, "device_stats", want, "realtime view after the first events")
    print(f"first {len(first)} events visible after {took:.2f} s")
    version, _ = view(srv, "device_stats")
    assert version is None                                # no batch version yet: all realtime
    before = info(srv, "device_stats")
    assert before["version"] is None and before["batch_cutoff"] is None and before["late_events"] == 0

    srv.wait_caught_up()
    job = run_batch(srv, "device_stats")
    assert job["result"]["views"] == {"device_stats": 1}
    assert job["result"]["records"] == len(first)        # the log holds each event once
    version, got = view(srv, "device_stats")
    assert version == 1
    assert_rows(got, want, "merged view after the batch run")
    after = info(srv, "device_stats")
    assert after["version"] == 1 and after["versions"] == [1]
    assert sum(after["batch_cutoff"].values()) == len(first)   # the batch version covers the whole log...
    _, batch_only = view(srv, "device_stats", "?version=1")
    assert_rows(batch_only, want, "batch version alone")        # ... so the realtime part holds nothing

    second = fleet.readings(800, start + len(first) * 250)
    last = first[-1]    # one more reading of its (device, kind) in its window: a row batch ⊕ realtime
    second[0] = fleet.reading(last["device"], last["ts"], last["payload"]["kind"])
    post_all(srv, second, rng)
    want_all = brute_stats(first + second)
    assert want_all != want and any(k in want for k in brute_stats(second))
    took = eventually(srv, "device_stats", want_all, "merged view after more events")
    print(f"then {len(second)} more visible after {took:.2f} s")
    version, batch_only = view(srv, "device_stats", "?version=1")
    assert version == 1
    assert_rows(batch_only, want, "batch version after more events (unchanged)")
    assert view(srv, "device_stats")[0] == 1
    metrics = srv.get("/v1/metrics")
    assert metrics["events"]["accepted"] == len(first) + len(second)
    assert metrics["events"]["duplicates"] == len(again)
    assert_healthy(srv)


# -- 2. Very late events -----------------------------------------------------------------------------

def test_late_readings_are_counted_and_correct_the_realtime_view_before_any_batch_run(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=100)
    fleet = Devices(rng, 6)
    start = base_ms(rng)
    on_time = fleet.readings(900, start)
    post_all(srv, on_time, rng)
    want = brute_stats(on_time)
    eventually(srv, "device_stats", want, "realtime view of on-time events")
    srv.wait_caught_up()

    # Readings more than 30 s older than the newest one of their device (so of their log
    # partition too), inside windows this (device, kind) already has in the view.
    newest = {d: max(e["ts"] for e in on_time if e["device"] == d) for d in fleet.names}
    old_enough = [e for e in on_time if e["ts"] < newest[e["device"]] - LATENESS_MS - WINDOW_MS]
    late = []
    for e in rng.sample(old_enough, 60):
        window_start = e["ts"] - e["ts"] % WINDOW_MS
        late.append(fleet.reading(e["device"], rng.randint(window_start, e["ts"]), e["payload"]["kind"]))
    assert all(((e["device"], e["payload"]["kind"]), (e["ts"] - e["ts"] % WINDOW_MS,
                                                      e["ts"] - e["ts"] % WINDOW_MS + WINDOW_MS)) in want
               for e in late)
    late_before = info(srv, "device_stats")["late_events"]
    assert late_before == 0
    post_all(srv, late, rng)
    wait_until(lambda: info(srv, "device_stats")["late_events"] == late_before + len(late),
               f"late_events to grow by {len(late)}")
    srv.wait_caught_up()
    assert srv.get("/v1/metrics")["speed_layer"]["device_stats"]["late_events"] == len(late)
    final = brute_stats(on_time + late)
    assert final != want
    _, got = view(srv, "device_stats")
    assert_rows(got, final, "realtime view after late events (they correct their windows)")
    job = run_batch(srv, "device_stats")
    assert job["result"]["records"] == len(on_time) + len(late)
    version, got = view(srv, "device_stats")
    assert version == 1
    assert_rows(got, final, "view after the batch run (late events included)")
    assert info(srv, "device_stats")["late_events"] == len(late)   # a counter: reported, not reset

    more = fleet.readings(300, start + len(on_time) * 250)
    post_all(srv, more, rng)
    eventually(srv, "device_stats", brute_stats(on_time + late + more), "batch ⊕ realtime after the batch run")
    assert info(srv, "device_stats")["late_events"] == len(late)
    assert_healthy(srv)


# -- 3. kill -9 in the middle of a load -----------------------------------------------------------------

class RetryingClient(threading.Thread):
    """Posts batches of events; retries a batch, as a device would, until it is acknowledged.

    Now and then an acknowledgement is "lost" (the device never heard it) and the batch is
    sent again: the server must then answer that every event of it is a duplicate.
    """

    def __init__(self, srv: ServerProcess, batches: list[list[Event]], rng: random.Random, pause_s: float,
                 lose_ack_p: float = 0.1) -> None:
        super().__init__(name="retrying-client", daemon=True)
        self.srv, self.batches, self.pause_s = srv, batches, pause_s
        self.lost = [rng.random() < lose_ack_p for _ in batches]
        self.acked: list[tuple[str, int]] = []
        self.acked_batches = 0
        self.retries = 0
        self.duplicates = 0
        self.problems: list[str] = []

    def post(self, batch: list[Event], gz: bool) -> tuple[int | None, Any]:
        try:
            return self.srv.post_events(batch, fmt="msgpack", gzip=gz)
        except (OSError, http.client.HTTPException, ValueError):   # refused, reset, cut short
            return None, None

    def run(self) -> None:
        for batch, lost in zip(self.batches, self.lost):
            attempts = 0
            while True:
                attempts += 1
                status, body = self.post(batch, attempts % 2 == 0)
                if status == 200:
                    break
                if status is not None and status not in (429, 503):
                    self.problems.append(f"HTTP {status}: {body}")
                self.retries += 1
                if attempts > 2000:
                    self.problems.append("gave up")
                    return
                time.sleep(0.02)
            if body["accepted"] + body["duplicates"] != len(batch) or body["rejected"]:
                self.problems.append(f"bad acknowledgement {body} for {len(batch)} events")
            if attempts == 1 and body["duplicates"]:
                self.problems.append(f"a first attempt was acknowledged with duplicates: {body}")
            self.duplicates += body["duplicates"]
            if lost:   # the acknowledgement never reached the device: it sends the batch again
                while (again := self.post(batch, False))[0] is None:
                    time.sleep(0.02)
                if again != (200, {"accepted": 0, "duplicates": len(batch), "rejected": []}):
                    self.problems.append(f"resending an acknowledged batch gave {again}")
            self.acked += [(e["device"], e["seq"]) for e in batch]
            self.acked_batches += 1
            time.sleep(self.pause_s)


def test_kill_9_mid_load_loses_and_duplicates_nothing_acknowledged(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    # small segments: the log rolls (and snapshots its de-duplication state) during the load
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=100,
                config="[log]\nsegment_bytes = 8192\n")
    fleet = Devices(rng, 20)
    events = fleet.readings(2400, base_ms(rng), step_ms=200)
    batches = [events[i:i + 50] for i in range(0, len(events), 50)]
    client = RetryingClient(srv, batches, rng, pause_s=0.02)
    client.start()
    for kill_after in (len(batches) // 4, len(batches) * 5 // 8):
        wait_until(lambda: client.acked_batches >= kill_after, f"{kill_after} acknowledged batches", 60)
        srv.kill()                                   # SIGKILL: no shutdown code runs
        assert srv.proc is not None and srv.proc.returncode == -9
        acked_before = client.acked_batches
        time.sleep(0.3)                              # the client meets a dead server and retries
        srv.start()
        # acknowledgements lost in the crash: the last batches acknowledged before it come again
        for batch in batches[acked_before - 3:acked_before]:
            assert srv.post_events(batch) == (200, {"accepted": 0, "duplicates": len(batch), "rejected": []})
    client.join(120)
    assert not client.is_alive() and not client.problems, client.problems
    assert client.retries > 0                        # the kills did interrupt the load
    assert client.acked_batches == len(batches)
    print(f"retries={client.retries} duplicates acknowledged={client.duplicates} "
          f"lost acknowledgements={sum(client.lost)}")
    by_id = {(e["device"], e["seq"]): e for e in events}
    acked = [by_id[k] for k in dict.fromkeys(client.acked)]
    assert len(acked) == len(events)                 # every batch was eventually acknowledged

    want = brute_stats(acked)
    srv.wait_caught_up()
    eventually(srv, "device_stats", want, "speed layer after two kill -9")
    version, got = view(srv, "device_stats")
    assert version is None
    assert sum(v["count"] for v in got.values()) == len(acked)   # no event counted twice
    # (the means are exact above; the sums, mean * count, once more with a float tolerance)
    sums: dict[tuple[Any, Any], Fraction] = defaultdict(Fraction)
    for e in acked:
        start = e["ts"] - e["ts"] % WINDOW_MS
        sums[((e["device"], e["payload"]["kind"]), (start, start + WINDOW_MS))] += Fraction(e["payload"]["value"])
    assert got.keys() == sums.keys()
    for k, v in got.items():
        assert v["mean"] * v["count"] == pytest.approx(float(sums[k]), rel=1e-12, abs=1e-9), k

    job = run_batch(srv, "device_stats")
    assert job["result"]["records"] == len(acked)   # the log holds no duplicate
    version, got = view(srv, "device_stats")
    assert version == 1
    assert_rows(got, want, "view after the batch run")
    _, batch_only = view(srv, "device_stats", "?version=1")
    assert_rows(batch_only, want, "batch version alone")
    assert sum(info(srv, "device_stats")["batch_cutoff"].values()) == len(acked)
    assert info(srv, "device_stats")["late_events"] == 0
    assert_healthy(srv)


# -- 4. Kappa reprocessing --------------------------------------------------------------------------------

OLD_FLOW = '''\
"""Word count, version 1: every whitespace-separated word, as written."""

import operator

import fluvial

pipeline = fluvial.Pipeline("wc")
lines = pipeline.from_log("line").map(lambda event: event.payload["text"])
words = lines.flat_map(str.split)
words.map(lambda word: (word, 1)).reduce_by_key(operator.add).to_view("words")
'''

NEW_FLOW = '''\
"""Word count, version 2: lowercased, words of one or two letters ignored."""

import operator

import fluvial

pipeline = fluvial.Pipeline("wc")
lines = pipeline.from_log("line").map(lambda event: event.payload["text"])
words = lines.flat_map(lambda text: [w.lower() for w in text.split() if len(w) > 2])
words.map(lambda word: (word, 1)).reduce_by_key(operator.add).to_view("words")
'''

VOCABULARY = ["river", "River", "RIVER", "flow", "Flow", "delta", "Delta", "rain", "a", "A", "of", "Of",
              "to", "the", "The", "THE", "bank", "stream", "Stream", "estuary", "mouth", "go", "GO", "silt",
              "Weir", "MUD"]


def old_words(events: Iterable[Event]) -> Rows:
    counts = Counter(w for e in distinct(events) for w in e["payload"]["text"].split())
    return {(w, None): n for w, n in counts.items()}


def new_words(events: Iterable[Event]) -> Rows:
    counts = Counter(w.lower() for e in distinct(events) for w in e["payload"]["text"].split() if len(w) > 2)
    return {(w, None): n for w, n in counts.items()}


def lines(fleet: Devices, n: int, start_ms: int) -> list[Event]:
    rng = fleet.rng
    return [fleet.event(rng.choice(fleet.names), "line", start_ms + i * 10,
                        {"text": " ".join(rng.choices(VOCABULARY, k=rng.randint(0, 12)))}) for i in range(n)]


def brute_diff(old: Rows, new: Rows) -> dict[str, int]:
    return {"old_rows": len(old), "new_rows": len(new), "added": len(new.keys() - old.keys()),
            "removed": len(old.keys() - new.keys()),
            "changed": sum(1 for k in old.keys() & new.keys() if old[k] != new[k])}


class Reader(threading.Thread):
    """Queries a view as fast as it can; classifies every answer by the expected row sets."""

    def __init__(self, srv: ServerProcess, name: str, expected: dict[str, Rows]) -> None:
        super().__init__(name="reader", daemon=True)
        self.srv, self.name, self.expected = srv, name, expected
        self.seen: list[tuple[str, int | None]] = []   # (which expected rows, version)
        self.bad: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, raw = self.srv.request("GET", f"/v1/views/{self.name}")
                if status != 200:
                    self.bad.append(f"HTTP {status}: {raw[:300]!r}")
                    continue
                body = json.loads(raw)
                rows = as_rows(body["rows"])
            except Exception as exc:
                self.bad.append(f"{type(exc).__name__}: {exc}")
                continue
            which = next((label for label, want in self.expected.items() if rows == want), None)
            if which is None:
                self.bad.append(f"version {body['version']}: {len(rows)} rows matching no expected result")
            else:
                self.seen.append((which, body["version"]))

    def wait_for(self, n: int) -> None:
        wait_until(lambda: len(self.seen) + len(self.bad) >= n, f"{n} reader queries")


def reprocess(srv: ServerProcess, body: dict[str, Any], reader_expects: dict[str, Rows] | None = None
              ) -> tuple[dict[str, Any], list[tuple[str, int | None]]]:
    """POST .../words/reprocess and wait for the job, with a concurrent reader if asked."""
    reader = None
    if reader_expects is not None:
        reader = Reader(srv, "words", reader_expects)
        reader.start()
        reader.wait_for(3)
    status, job = srv.admin("POST", "/v1/views/words/reprocess", body)
    assert status == 202, job
    assert job["kind"] == "reprocess"
    done = srv.wait_job(job["id"])
    assert done["status"] == "done", done
    if reader is None:
        return done, []
    reader.wait_for(len(reader.seen) + len(reader.bad) + 3)
    reader.stop.set()
    reader.join(30)
    assert not reader.bad, reader.bad[:5]
    print(f"reader: {len(reader.seen)} queries, {Counter(w for w, _ in reader.seen)}")
    return done, reader.seen


def assert_switch_seen_atomically(seen: list[tuple[str, int | None]], versions: dict[str, set[int | None]]) -> None:
    """Each answer is the old rows under an old version or the new rows under the new one, and once
    a reader saw the new rows it never sees the old ones again."""
    assert seen and seen[0][0] == "old" and seen[-1][0] == "new", seen
    for which, version in seen:
        assert version in versions[which], (which, version, versions)
    labels = [w for w, _ in seen]
    assert labels == sorted(labels, key=lambda w: w == "new"), "a reader saw the old rows after the new ones"


def test_reprocess_switches_atomically_then_drops_the_old_version(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    old_file, new_file = tmp_path / "wc_v1.py", tmp_path / "wc_v2.py"
    old_file.write_text(OLD_FLOW)
    srv = serve(kappa=[old_file], batch_interval_ms=100)
    fleet = Devices(rng, 8)
    start = base_ms(rng)
    first = lines(fleet, 2500, start)
    post_all(srv, first, rng)
    eventually(srv, "words", old_words(first), "old code, speed layer")
    srv.wait_caught_up()
    assert info(srv, "words")["architecture"] == "kappa"

    # the changed code is written while the server runs; first a dry run: the diff, nothing switches
    new_file.write_text(NEW_FLOW)
    done, _ = reprocess(srv, {"from": "earliest", "flow": str(new_file), "dry_run": True})
    result = done["result"]
    assert result["dry_run"] is True and result["switched"] is False
    assert result["records"] == len(first)
    diff = brute_diff(old_words(first), new_words(first))
    assert diff["added"] and diff["removed"] and diff["changed"]
    assert {k: result["diff"]["words"][k] for k in diff} == diff
    assert view(srv, "words") == (None, old_words(first))
    assert info(srv, "words")["versions"] == []          # the new version was dropped

    # the current code again, into a version of its own: the rows stay the same
    done, seen = reprocess(srv, {"from": "earliest", "grace_s": 1}, reader_expects={"old": old_words(first)})
    v1 = done["result"]["new_versions"]["words"]
    versions = [v for _, v in seen]
    assert versions[0] is None and versions[-1] == v1 and set(versions) == {None, v1}
    assert versions == sorted(versions, key=lambda v: v is not None), "a reader saw version None after v1"
    # the rows the old code computed in the speed layer alone were kept as a version (for rollbacks)
    snapshot = done["result"]["old_versions"]["words"]
    assert done["result"]["switched"] is True and snapshot is not None and snapshot < v1
    assert {k: done["result"]["diff"]["words"][k] for k in diff} == brute_diff(old_words(first), old_words(first))
    assert view(srv, "words") == (v1, old_words(first))

    # the changed code: readers see the old view or the new one, never a mix
    done, seen = reprocess(srv, {"from": "earliest", "flow": str(new_file), "grace_s": 1.5},
                           reader_expects={"old": old_words(first), "new": new_words(first)})
    result = done["result"]
    v2 = result["new_versions"]["words"]
    assert result["switched"] is True and result["old_versions"] == {"words": v1} and v2 > v1
    assert result["records"] == len(first)
    assert {k: result["diff"]["words"][k] for k in diff} == diff
    assert_switch_seen_atomically(seen, {"old": {v1}, "new": {v2}})
    assert view(srv, "words") == (v2, new_words(first))
    if time.time() - done["finished_ms"] / 1000 < 1.0:
        assert info(srv, "words")["versions"] == [v1, v2]   # the old version serves rollbacks for grace_s
    wait_until(lambda: info(srv, "words")["versions"] == [v2], "the old version to be dropped after grace_s")
    assert time.time() - done["finished_ms"] / 1000 >= 1.5 - 0.05   # ... and not before
    assert srv.get(f"/v1/jobs/{done['id']}")["result"]["dropped_old"] is True
    status, body = srv.admin("POST", "/v1/views/words/rollback")
    assert status == 409, body                          # nothing left to roll back to

    # the speed layer now runs the new code
    second = lines(fleet, 400, start + len(first) * 10)
    post_all(srv, second, rng)
    eventually(srv, "words", new_words(first + second), "new code, speed layer after the switch")
    assert view(srv, "words")[0] == v2
    assert_healthy(srv)

    # a restart runs the code that wrote the current view (DATA_DIR/flows.json)
    srv.stop()
    srv.start()
    assert view(srv, "words") == (v2, new_words(first + second))
    third = lines(fleet, 200, start + (len(first) + len(second)) * 10)
    post_all(srv, third, rng)
    eventually(srv, "words", new_words(first + second + third), "new code after a restart")
    assert_healthy(srv)


def test_reprocess_keep_old_then_rollback_to_the_old_code(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    old_file, new_file = tmp_path / "wc_v1.py", tmp_path / "wc_v2.py"
    old_file.write_text(OLD_FLOW)
    new_file.write_text(NEW_FLOW)
    srv = serve(kappa=[old_file], batch_interval_ms=100)
    fleet = Devices(rng, 8)
    start = base_ms(rng)
    first = lines(fleet, 1500, start)
    post_all(srv, first, rng)
    eventually(srv, "words", old_words(first), "old code, speed layer")
    srv.wait_caught_up()
    done, _ = reprocess(srv, {"from": "earliest"})                      # v1: the old code, versioned
    v1 = done["result"]["new_versions"]["words"]

    done, seen = reprocess(srv, {"from": "earliest", "flow": str(new_file), "keep_old": True, "grace_s": 0.2},
                           reader_expects={"old": old_words(first), "new": new_words(first)})
    v2 = done["result"]["new_versions"]["words"]
    assert_switch_seen_atomically(seen, {"old": {v1}, "new": {v2}})
    assert view(srv, "words") == (v2, new_words(first))
    time.sleep(0.6)                                                      # past grace_s: kept anyway
    kept = info(srv, "words")
    assert kept["versions"] == [v1, v2] and kept["previous_version"] == v1
    assert done["result"]["dropped_old"] is False

    second = lines(fleet, 300, start + len(first) * 10)
    post_all(srv, second, rng)
    eventually(srv, "words", new_words(first + second), "new code, speed layer after the switch")

    status, body = srv.admin("POST", "/v1/views/words/rollback")
    assert (status, body) == (200, {"view": "words", "versions": {"words": v1}})
    # the old code again, and it recounts what came after its version's cut-off
    eventually(srv, "words", old_words(first + second), "old code after the rollback")
    assert view(srv, "words")[0] == v1
    third = lines(fleet, 300, start + (len(first) + len(second)) * 10)
    post_all(srv, third, rng)
    eventually(srv, "words", old_words(first + second + third), "old code counts events after the rollback")
    assert info(srv, "words")["version"] == v1
    assert_healthy(srv)

    # and forward again: after the grace period only the new version is left
    done, seen = reprocess(srv, {"from": "earliest", "flow": str(new_file), "grace_s": 0.5},
                           reader_expects={"old": old_words(first + second + third),
                                           "new": new_words(first + second + third)})
    v3 = done["result"]["new_versions"]["words"]
    assert_switch_seen_atomically(seen, {"old": {v1}, "new": {v3}})
    wait_until(lambda: v1 not in info(srv, "words")["versions"], "the old version to be dropped after grace_s")
    assert info(srv, "words")["version"] == v3
    assert_healthy(srv)


# -- found by these tests, fixed since ----------------------------------------------

def start_words(serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path, n: int,
                config: str | None = None) -> tuple[ServerProcess, Path, list[Event]]:
    """A kappa word-count server that counted ``n`` lines with the old code; the new code's file."""
    old_file, new_file = tmp_path / "wc_v1.py", tmp_path / "wc_v2.py"
    old_file.write_text(OLD_FLOW)
    new_file.write_text(NEW_FLOW)
    srv = serve(kappa=[old_file], batch_interval_ms=100, config=config)
    events = lines(Devices(rng, 8), n, base_ms(rng))
    post_all(srv, events, rng)
    eventually(srv, "words", old_words(events), "old code, speed layer")
    srv.wait_caught_up()
    return srv, new_file, events


def test_reprocess_replays_the_whole_log_with_small_micro_batches(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    srv, new_file, events = start_words(serve, rng, tmp_path, 600, config="[stream]\nmax_batch_records = 150\n")
    done, _ = reprocess(srv, {"from": "earliest", "flow": str(new_file), "dry_run": True})
    assert done["result"]["records"] == len(events)
    done, _ = reprocess(srv, {"from": "earliest", "flow": str(new_file)})
    assert view(srv, "words") == (done["result"]["new_versions"]["words"], new_words(events))


def test_no_version_outlives_a_rollback_and_the_next_reprocessing(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    srv, new_file, _ = start_words(serve, rng, tmp_path, 300)
    reprocess(srv, {"from": "earliest"})                                               # v1, old code
    reprocess(srv, {"from": "earliest", "flow": str(new_file), "keep_old": True})      # v2, new code
    assert srv.admin("POST", "/v1/views/words/rollback")[0] == 200                     # back to v1
    done, _ = reprocess(srv, {"from": "earliest", "flow": str(new_file), "grace_s": 0.2})  # v3; v1 dropped
    v3 = done["result"]["new_versions"]["words"]
    wait_until(lambda: srv.get(f"/v1/jobs/{done['id']}")["result"]["dropped_old"], "the grace period")
    assert info(srv, "words")["versions"] == [v3]


def test_rollback_after_the_first_reprocessing_with_keep_old(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    srv, new_file, events = start_words(serve, rng, tmp_path, 300)
    done, _ = reprocess(srv, {"from": "earliest", "flow": str(new_file), "keep_old": True})
    assert done["result"]["switched"] is True
    assert view(srv, "words")[1] == new_words(events)
    status, body = srv.admin("POST", "/v1/views/words/rollback")
    assert status == 200, body
    eventually(srv, "words", old_words(events), "old code after the rollback")


# -- 5. A clean restart ---------------------------------------------------------------------------------------

def tweets(fleet: Devices, n: int, start_ms: int) -> list[Event]:
    rng = fleet.rng
    tags = [f"#{w}" for w in ("flood", "Rain", "river", "storm", "dam", "Delta", "kayak", "drought", "tide",
                              "silt", "weir", "levee", "Bridge")]
    out = []
    for i in range(n):
        words = rng.choices(tags, k=rng.randint(0, 3)) + rng.choices(["water", "high", "#", "today"], k=2)
        rng.shuffle(words)
        out.append(fleet.event(rng.choice(fleet.names), "tweet", start_ms + i * 700,
                               {"user": "u", "text": " ".join(words)}))
    return out


def test_clean_restart_keeps_the_views_and_goes_on_counting(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    srv = serve(flows=[EXAMPLES / "device_stats.py", EXAMPLES / "hashtag_top10.py"], batch_interval_ms=100)
    fleet = Devices(rng, 10)
    start = base_ms(rng)
    readings = [fleet.readings(600, start), fleet.readings(300, start + 600 * 250),
                fleet.readings(300, start + 900 * 250)]
    posts = [tweets(fleet, 250, start), tweets(fleet, 100, start + 250 * 700), tweets(fleet, 100, start + 350 * 700)]

    post_all(srv, readings[0], rng)
    post_all(srv, posts[0], rng)
    eventually(srv, "device_stats", brute_stats(readings[0]), "device_stats")
    eventually(srv, "hashtag_top10", brute_top10(posts[0]), "hashtag_top10")
    srv.wait_caught_up()
    run_batch(srv, "device_stats")
    run_batch(srv, "hashtag_top10")
    post_all(srv, readings[1], rng)                  # a realtime part on top of the batch versions
    post_all(srv, posts[1], rng)
    eventually(srv, "device_stats", brute_stats(readings[0] + readings[1]), "device_stats, batch ⊕ realtime")
    eventually(srv, "hashtag_top10", brute_top10(posts[0] + posts[1]), "hashtag_top10, batch ⊕ realtime")
    srv.wait_caught_up()
    before = {name: (view(srv, name), info(srv, name)) for name in ("device_stats", "hashtag_top10")}

    # uvicorn re-raises the SIGTERM it handled once the shutdown is done: -15 is a clean exit too
    assert srv.stop() in (0, -signal.SIGTERM)
    assert not (srv.data_dir / "server.json").exists()   # the shutdown code ran
    srv.start()
    for name, ((version, rows), meta) in before.items():
        assert view(srv, name) == (version, rows), name   # right away, nothing replayed lost or doubled
        now = info(srv, name)
        for field in ("version", "versions", "batch_cutoff", "late_events"):
            assert now[field] == meta[field], (name, field)
    status, body = srv.post_events(readings[1][:50])
    assert (status, body) == (200, {"accepted": 0, "duplicates": 50, "rejected": []})  # de-duplication survives

    post_all(srv, readings[2], rng)
    post_all(srv, posts[2], rng)
    all_readings, all_posts = readings[0] + readings[1] + readings[2], posts[0] + posts[1] + posts[2]
    eventually(srv, "device_stats", brute_stats(all_readings), "device_stats after the restart")
    eventually(srv, "hashtag_top10", brute_top10(all_posts), "hashtag_top10 after the restart")
    srv.wait_caught_up()
    assert run_batch(srv, "device_stats")["result"]["records"] == len(all_readings) + len(all_posts)
    assert view(srv, "device_stats") == (2, brute_stats(all_readings))
    assert_healthy(srv)


# -- a second runner beside the server -----------------------------------------------------------------

def test_a_runner_beside_serve_is_refused_and_a_take_over_hands_the_pipeline_back(
        serve: Callable[..., ServerProcess], rng: random.Random, tmp_path: Path) -> None:
    """`fluvial run` of a pipeline the server runs is refused, naming the server; with
    --take-over it fences the server's speed layer, which waits and resumes when it stops."""
    srv = serve(flows=[EXAMPLES / "device_stats.py"], batch_interval_ms=100)
    fleet = Devices(rng, 6)
    start = base_ms(rng)
    posted = fleet.readings(300, start)
    post_all(srv, posted, rng)
    eventually(srv, "device_stats", brute_stats(distinct(posted)), "the server's speed layer")

    def cli_run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(srv.data_dir), "run",
                               str(EXAMPLES / "device_stats.py"), "--mode", "stream", "--until-caught-up",
                               *flags], capture_output=True, text=True, timeout=120)

    refused = cli_run()
    assert refused.returncode == 1, refused.stderr
    assert f"pid {srv.proc.pid}" in refused.stderr and "serve" in refused.stderr, refused.stderr
    assert "--take-over" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    more = fleet.readings(300, start + 300 * 250)
    post_all(srv, more, rng)
    taken = cli_run("--take-over")
    assert taken.returncode == 0, taken.stderr
    posted += more
    last = fleet.readings(300, start + 600 * 250)
    post_all(srv, last, rng)
    posted += last
    # the server's speed layer was fenced, waited for the pipeline, and goes on from the checkpoint
    eventually(srv, "device_stats", brute_stats(distinct(posted)), "after the take-over ended", timeout=30)
    assert "no longer holds" in srv.output() or "taken over" in srv.output(), srv.output()[-3000:]
