"""The speed layer, the batch layer and their checkpoints agree, whatever happens when.

A real ``fluvial serve`` child process on loopback, ``examples/device_stats.py``
(per (device, kind) and minute: count, min, max, mean), events generated from a
printed seed (``FLUVIAL_TEST_SEED=N`` replays it), every expectation a brute
force in plain Python over exactly the events acknowledged (or, after a torn
tail, over what the log holds):

* a batch run requested right after posting, before the speed layer's first
  checkpoint, counts each event once (it counted everything twice);
* SIGKILL of the server (and of its batch children) at random moments while
  events are posted and batch runs requested: after restarts, every
  acknowledged event is counted exactly once;
* a torn tail cut below the speed layer's checkpoint (and below the batch
  cut-off): the realtime view is recomputed, and new events that reuse the lost
  offsets are counted (they were skipped);
* late events are counted once per view version: a reprocessing, a dry run and
  a rollback leave the count as the brute force says (it grew with each).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from server_proc import EXAMPLES, ServerProcess

import fluvial as fl
from fluvial.testing.brute import split_late

SEED = int(os.environ.get("FLUVIAL_TEST_SEED") or random.randrange(2**32))
WINDOW_MS = 60_000
LATENESS_MS = 30_000
PARTITIONS = 4
FLOW = EXAMPLES / "device_stats.py"
Event = dict[str, Any]
Rows = dict[tuple[Any, Any], Any]



@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(**kwargs: Any) -> ServerProcess:
        srv = ServerProcess(tmp_path, **kwargs)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
        print(f"--- server output ({srv.log_file.name}) ---\n{srv.output()[-3000:]}")


class Fleet:
    """Devices numbering their readings; ``readings`` are never late (jitter < lateness)."""

    def __init__(self, rng: random.Random, n: int = 12) -> None:
        self.rng = rng
        self.names = [f"dev-{i:02d}" for i in range(n)]
        self.seq = dict.fromkeys(self.names, 0)
        self.now_ms = 1_704_067_200_000 + rng.randrange(365 * 86_400_000)

    def reading(self, device: str, ts: int) -> Event:
        self.seq[device] += 1
        value = self.rng.uniform(-40, 60) if self.rng.random() < 0.7 else float(self.rng.randint(-40, 60))
        return {"device": device, "kind": "reading", "ts": ts, "seq": self.seq[device],
                "payload": {"kind": self.rng.choice(("temp", "hum")), "value": value}}

    def readings(self, n: int) -> list[Event]:
        out = []
        for _ in range(n):
            self.now_ms += 250
            out.append(self.reading(self.rng.choice(self.names), self.now_ms + self.rng.randrange(10_000)))
        return out


def brute_stats(events: list[Event]) -> Rows:
    """``device_stats`` by brute force: per ((device, kind), minute) count, min, max, exact mean."""
    groups: dict[tuple[Any, Any], list[float]] = defaultdict(list)
    for e in events:
        start = e["ts"] - e["ts"] % WINDOW_MS
        groups[((e["device"], e["payload"]["kind"]), (start, start + WINDOW_MS))].append(e["payload"]["value"])
    return {k: {"count": len(v), "min": min(v), "max": max(v), "mean": float(sum(map(Fraction, v)) / len(v))}
            for k, v in groups.items()}


def view(srv: ServerProcess) -> Rows:
    rows = srv.get("/v1/views/device_stats")["rows"]
    return {((r["key"][0], r["key"][1]), tuple(r["window"])): r["value"] for r in rows}


def info(srv: ServerProcess) -> dict[str, Any]:
    (found,) = [v for v in srv.get("/v1/views")["views"] if v["name"] == "device_stats"]
    return found  # type: ignore[no-any-return]


def assert_rows(got: Rows, want: Rows, what: str) -> None:
    if got == want:
        return
    total = sum(v["count"] for v in got.values()), sum(v["count"] for v in want.values())
    wrong = [(k, got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)]
    raise AssertionError(f"{what}: {len(got)} rows, expected {len(want)}; events counted {total[0]}, "
                         f"expected {total[1]}; {len(wrong)} rows differ, e.g. {wrong[:3]} [seed={SEED}]")


def eventually(srv: ServerProcess, want: Rows, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := view(srv)) != want:
        if time.monotonic() > deadline:
            assert_rows(got, want, f"{what} (after {timeout} s)")
        time.sleep(0.05)


def post(srv: ServerProcess, events: list[Event], size: int = 50) -> None:
    for i in range(0, len(events), size):
        part = events[i:i + size]
        status, body = srv.post_events(part)
        assert status == 200 and body["accepted"] == len(part), (status, body)


def run_batch(srv: ServerProcess) -> dict[str, Any]:
    status, job = srv.admin("POST", "/v1/views/device_stats/batch")
    assert status == 202, job
    done = srv.wait_job(job["id"])
    assert done["status"] == "done", done
    return done  # type: ignore[no-any-return]


# -- 1. a batch run before the speed layer's first checkpoint --------------------------------------

def test_batch_requested_right_after_posting_counts_each_event_once(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    """Issue 16, defect 2.  A long micro-batch interval makes the speed layer's first
    commit come after the batch run took its cut-off (the order that counted twice)."""
    srv = serve(flows=[FLOW], batch_interval_ms=3000)
    fleet = Fleet(rng)
    first = fleet.readings(rng.randint(1500, 2500))
    post(srv, first, size=250)
    run_batch(srv)                                   # right away: no stream checkpoint yet
    srv.wait_caught_up()
    eventually(srv, brute_stats(first), "merged view after a batch run before the first checkpoint")
    more = fleet.readings(rng.randint(200, 400))
    post(srv, more)
    run_batch(srv)                                   # and again, with the speed layer under way
    srv.wait_caught_up()
    eventually(srv, brute_stats(first + more), "merged view after a second batch run")


# -- 2. SIGKILL at random moments ------------------------------------------------------------------

class Poster(threading.Thread):
    """Posts batches; retries each (as a device does) until acknowledged; records what was."""

    def __init__(self, srv: ServerProcess, batches: list[list[Event]]) -> None:
        super().__init__(daemon=True)
        self.srv, self.batches = srv, batches
        self.acked: list[Event] = []
        self.problems: list[str] = []

    def run(self) -> None:
        for batch in self.batches:
            for _ in range(3000):
                try:
                    status, body = self.srv.post_events(batch)
                except (OSError, ValueError):
                    status, body = None, None
                if status == 200:
                    if body["accepted"] + body["duplicates"] != len(batch):
                        self.problems.append(f"bad acknowledgement {body}")
                    self.acked += batch
                    break
                if status not in (None, 429, 503):
                    self.problems.append(f"HTTP {status}: {body}")
                time.sleep(0.02)
            else:
                self.problems.append("a batch was never acknowledged")
                return
            time.sleep(0.01)


class BatchRequester(threading.Thread):
    """Asks for batch runs now and then until stopped (answers are not checked: the server dies)."""

    def __init__(self, srv: ServerProcess, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.srv, self.pause = srv, [rng.uniform(0.05, 0.6) for _ in range(1000)]
        self.stopping = threading.Event()
        self.requested = 0

    def run(self) -> None:
        for pause in self.pause:
            if self.stopping.wait(pause):
                return
            try:
                status, _ = self.srv.admin("POST", "/v1/views/device_stats/batch")
                self.requested += status == 202
            except (OSError, ValueError):
                pass


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def strays(srv: ServerProcess) -> list[int]:
    """Batch children of earlier (killed) servers of ``srv``'s data directory, still running:
    also those started in the moment between a look at the server's children and its SIGKILL."""
    assert srv.proc is not None
    own = {srv.proc.pid, *srv.children()}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in own:
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(srv.data_dir).encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float = 60.0) -> None:
    """Wait for orphaned batch children to finish; SIGKILL what is left."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_while_batches_run_and_events_arrive(serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    """SIGKILL the server at random moments (sometimes its batch children too, sometimes
    leaving them to finish as orphans) while a device posts and batch runs are asked for."""
    srv = serve(flows=[FLOW], batch_interval_ms=rng.choice([50, 300, 1000]))
    fleet = Fleet(rng)
    events = fleet.readings(3000)
    poster = Poster(srv, [events[i:i + 40] for i in range(0, len(events), 40)])
    requester = BatchRequester(srv, rng)
    poster.start()
    requester.start()
    orphans: list[int] = []
    kills = []
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 1.5))
        children = srv.children()
        srv.kill()
        if children and rng.random() < 0.5:
            for pid in children:            # the batch child dies too (a host crash)
                os.kill(pid, signal.SIGKILL)
        else:
            orphans += children             # left to finish, or fail, on its own
        kills.append((len(poster.acked), len(children)))
        time.sleep(rng.uniform(0.0, 0.3))
        srv.start()
    poster.join(120)
    requester.stopping.set()
    requester.join(10)
    print(f"kills (acknowledged so far, batch children)={kills} batch requests={requester.requested}")
    assert not poster.is_alive() and not poster.problems, poster.problems
    wait_gone(orphans + strays(srv))   # (the batch run below would find one of them holding the pipeline)
    want = brute_stats(poster.acked)
    assert sum(v["count"] for v in want.values()) == len(events)
    srv.wait_caught_up()
    eventually(srv, want, "merged view after SIGKILLs")
    run_batch(srv)
    srv.wait_caught_up()
    eventually(srv, want, "merged view after a final batch run")


# -- 3. a torn tail below the speed layer's checkpoint ---------------------------------------------

def log_contents(data_dir: Path) -> list[Event]:
    """Every event the log holds now, read back from its files."""
    out = []
    with fl.open(data_dir) as ws:
        for p in range(ws.log.partitions):
            offset = 0
            while batch := ws.log.read(p, offset).events:
                out += [{"device": e.device, "kind": e.kind, "ts": e.ts, "seq": e.seq, "payload": e.payload}
                        for e in batch]
                offset += len(batch)
    return out


def tear_last_batch(data_dir: Path, rng: random.Random) -> Path:
    """Cut a few bytes off the last segment of a partition: its last batch is torn."""
    segments = [max(d.glob("*.seg")) for d in sorted((data_dir / "log").glob("p-*"))]
    segment = rng.choice([s for s in segments if s.stat().st_size > 0])
    size = segment.stat().st_size
    os.truncate(segment, size - rng.randint(1, 16))
    return segment


@pytest.mark.parametrize("tear", ["above_batch_cutoff", "below_batch_cutoff"])
def test_a_torn_tail_below_the_checkpoint_is_recomputed(
        serve: Callable[..., ServerProcess], rng: random.Random, tear: str) -> None:
    """Issue 16, defect 4.  The log loses its last batch in one partition after the speed
    layer counted it; new events then take those offsets again."""
    srv = serve(flows=[FLOW], batch_interval_ms=100)
    fleet = Fleet(rng)
    first, second = fleet.readings(600), fleet.readings(600)
    post(srv, first, size=30)
    if tear == "above_batch_cutoff":
        srv.wait_caught_up()
        run_batch(srv)                               # cut-off: end of `first`
    post(srv, second, size=30)
    srv.wait_caught_up()
    if tear == "below_batch_cutoff":
        run_batch(srv)                               # cut-off: the end of the log, torn below
    eventually(srv, brute_stats(first + second), "before the crash")
    srv.kill()
    segment = tear_last_batch(srv.data_dir, rng)
    srv.start()
    assert "cut a torn tail" in srv.output(), srv.output()[-2000:]
    kept = log_contents(srv.data_dir)
    lost = len(first) + len(second) - len(kept)
    print(f"tore {segment.parent.name}/{segment.name}: {lost} events gone")
    assert lost > 0
    third = fleet.readings(400)
    post(srv, third, size=20)                        # reuses the lost offsets
    srv.wait_caught_up()
    eventually(srv, brute_stats(kept + third), "merged view after the torn tail and new events")
    assert len(log_contents(srv.data_dir)) == len(kept) + len(third)
    run_batch(srv)
    srv.wait_caught_up()
    eventually(srv, brute_stats(kept + third), "merged view after a batch run")


# -- 4. late counts, once per version ---------------------------------------------------------------

def brute_late(events: list[Event]) -> int:
    """How many of ``events`` (in log order) the speed layer finds late, by the rule itself."""
    _, late = split_late([fl.Event(**e) for e in events], partitions=PARTITIONS, lateness_ms=LATENESS_MS)
    return len(late)


def late_figures(srv: ServerProcess) -> tuple[int, int]:
    """The LATE figure of ``/v1/views`` (also what the UI and ``fluvial views`` show) and of ``/metrics``."""
    metrics = srv.get("/v1/metrics")["speed_layer"]["device_stats"]["late_events"]
    return info(srv)["late_events"], metrics


def wait_late(srv: ServerProcess, want: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while (got := late_figures(srv)) != (want, want):
        assert time.monotonic() < deadline, f"{what}: late figures {got}, expected {want} [seed={SEED}]"
        time.sleep(0.05)


def test_late_counts_once_per_version_through_reprocess_dry_run_and_rollback(
        serve: Callable[..., ServerProcess], rng: random.Random) -> None:
    """Issue 8, item 5: 2 late events showed as 4, 6, then 7."""
    srv = serve(flows=[FLOW], batch_interval_ms=100)
    fleet = Fleet(rng, n=8)
    on_time = fleet.readings(300)
    post(srv, on_time)
    srv.wait_caught_up()
    late = [fleet.reading(d, fleet.now_ms - rng.randint(5, 20) * 60_000) for d in rng.sample(fleet.names, 4)]
    late += [fleet.reading(rng.choice(fleet.names), fleet.now_ms - rng.randint(5, 20) * 60_000)
             for _ in range(rng.randint(0, 3))]
    post(srv, late)
    expected = brute_late(on_time + late)
    assert expected == len(late) > 0
    wait_late(srv, expected, "after the late events")

    def job(body: dict[str, Any]) -> None:
        status, started = srv.admin("POST", "/v1/views/device_stats/reprocess", body)
        assert status == 202, started
        done = srv.wait_job(started["id"])
        assert done["status"] == "done", done

    job({"from": "earliest", "keep_old": True})
    srv.wait_caught_up()
    wait_late(srv, expected, "after a reprocessing")
    job({"from": "earliest", "dry_run": True})
    wait_late(srv, expected, "after a dry run")
    status, body = srv.admin("POST", "/v1/views/device_stats/rollback")
    assert status == 200, body
    srv.wait_caught_up()
    wait_late(srv, expected, "after a rollback")
    run_batch(srv)
    wait_late(srv, expected, "after a batch run (a count, not reset)")
    eventually(srv, brute_stats(on_time + late), "the batch run includes the late events")
    # The batch run handed the speed layer a new start at its cut-off, with no watermark
    # yet: what it finds late from now on is the rule applied to what it reads from there.
    more_on_time = fleet.readings(100)
    post(srv, more_on_time)
    srv.wait_caught_up()
    more = [fleet.reading(d, fleet.now_ms - rng.randint(5, 20) * 60_000) for d in rng.sample(fleet.names, 3)]
    post(srv, more)
    added = brute_late(more_on_time + more)
    assert added == len(more)
    wait_late(srv, expected + added, "after more late events")
