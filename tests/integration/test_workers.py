"""``fluvial worker`` groups sharing a pipeline's partitions, as real processes (issue 10, item 4).

* Workers SIGKILLed at random moments while events are appended, new ones (sometimes two at
  once) started in their place, one SIGSTOPped past its lease and then resumed: its
  partitions are taken over, its late commit is refused, and after the end every view
  equals the brute force over exactly the events the log acknowledged.
* A worker joining takes partitions from the one running (the rebalance shows in their
  output); a worker leaving hands its partitions back.
* A pipeline is run by workers or by a single runner (`fluvial run --mode stream`), never
  both: the second refuses, naming the first; a batch run refuses a workers' pipeline.

On the SQLite store of the data directory and on PostgreSQL (a fresh schema: tests/stores.py).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fluvial
from fluvial import Event, LogConfig
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.groups import partition_id
from fluvial.testing import make_events
from logs import delete_streams, fresh_nats_url, nats_or_skip
from stores import store_url_of

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass
PARTITIONS = 4
NAME = "shared"
LEASE_MS = 1500
FLOW = f"""import fluvial

{NAME} = fluvial.Pipeline({NAME!r})
readings = {NAME}.from_log("reading")
(readings.map(lambda e: (e.payload["color"], e.payload["level"]))
    .aggregate_by_key(fluvial.Sum()).to_view("level_by_color"))
(readings.map(lambda e: (e.device, 1)).window(fluvial.Tumbling(length_ms=60_000))
    .aggregate_by_key(fluvial.Count()).to_view("per_device_minute"))
"""
VOID = "is void"


def generate(seed: int, n: int) -> list[Event]:
    # event time in log order (no late events: the brute force needs no watermark model)
    return make_events(seed, n, devices=16, kinds=["reading", "reading", "reading", "status"], step_ms=200)


def brute_force(events: list[Event]) -> dict[str, dict[Any, Any]]:
    """The views, computed in plain Python over ``events`` (each stored once)."""
    levels: Counter[str] = Counter()
    minutes: Counter[tuple[str, tuple[int, int]]] = Counter()
    for e in events:
        if e.kind != "reading":
            continue
        levels[e.payload["color"]] += e.payload["level"]
        start = e.ts - e.ts % 60_000
        minutes[(e.device, (start, start + 60_000))] += 1
    return {"level_by_color": dict(levels), "per_device_minute": dict(minutes)}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url_of(request.param, tmp_path / "data") as url:
        yield url


class Group:
    """The data directory, its log (appended by this process) and the worker processes."""

    def __init__(self, tmp_path: Path, store: str, log: str | None = None) -> None:
        self.directory, self.flow, self.store, self.log = tmp_path / "data", tmp_path / "flow.py", store, log
        self.flow.write_text(FLOW)
        self.ws = fluvial.open(self.directory, writer=True, log=log,
                               log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
        self.out = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.appended: list[Event] = []

    def cli(self, *args: str) -> list[str]:
        log = ["--log", self.log] if self.log is not None else []
        return [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(self.directory),
                "--store", self.store, *log, *args]

    def start(self) -> subprocess.Popen[bytes]:
        i = len(self.procs)
        with open(self.out / f"w{i}.out", "wb") as out, open(self.out / f"w{i}.err", "wb") as err:
            proc = subprocess.Popen(self.cli("worker", str(self.flow), "--batch-interval-ms", "20",
                                             "--max-batch-records", "60", "--lease-ms", str(LEASE_MS)),
                                    stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.out / f"w{self.procs.index(proc)}.out").read_text()

    def errors(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.out / f"w{self.procs.index(proc)}.err").read_text()

    def owns(self, proc: subprocess.Popen[bytes]) -> list[int] | None:
        """The partitions ``proc`` said last that it owns (None: it said nothing yet)."""
        lines = [line for line in self.output(proc).splitlines() if "owns partitions" in line]
        if not lines:
            return None
        inside = lines[-1].split("owns partitions [", 1)[1].split("]", 1)[0]
        return [int(p) for p in inside.split(",") if p.strip()]

    def append(self, events: list[Event]) -> None:
        for i in range(0, len(events), 40):
            result = self.ws.log.append(events[i:i + 40])
            assert result.accepted == len(events[i:i + 40])   # acknowledged: stored
        self.appended.extend(events)

    def committed(self) -> int:
        total = 0
        with fluvial.open(self.directory, store=self.store, log=self.log) as ws, ws.store.transaction() as txn:
            for p in range(PARTITIONS):
                blob = txn.get_checkpoint(partition_id(NAME, p))
                total += Checkpoint.loads(blob).offsets[0] if blob is not None else 0
        return total

    def views(self) -> dict[str, dict[Any, Any]]:
        with fluvial.open(self.directory, store=self.store, log=self.log) as ws:
            return {name: {(r.key if r.window is None else (r.key, tuple(r.window))): r.value
                           for r in ws.store.query(name)} for name in ("level_by_color", "per_device_minute")}

    def logged(self) -> list[Event]:
        """Every event the log holds (what it acknowledged), read back."""
        out: list[Event] = []
        for p in range(PARTITIONS):
            offset = self.ws.log.start_offsets()[p]
            while True:
                batch = self.ws.log.read(p, offset, max_records=10_000)
                if not batch.events:
                    break
                out.extend(batch.events)
                offset = batch.next_offset
        return out

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.ws.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.05)


def check_exact(group: Group) -> None:
    logged = group.logged()
    assert len(logged) == len(group.appended)   # every acknowledged event stored, once
    wait_for(lambda: group.committed() == len(logged), "the workers commit the whole log")
    assert group.views() == brute_force(logged)


@pytest.mark.slow
def test_workers_killed_paused_and_replaced_views_exact(tmp_path: Path, store: str) -> None:
    kill_pause_and_replace(tmp_path, store, None)


@pytest.mark.slow
def test_workers_killed_paused_and_replaced_on_a_nats_log_views_exact(tmp_path: Path) -> None:
    nats_or_skip()
    url = fresh_nats_url()
    try:
        kill_pause_and_replace(tmp_path, f"sqlite://{tmp_path / 'views.db'}", url)
    finally:
        delete_streams(url)


def kill_pause_and_replace(tmp_path: Path, store: str, log: str | None) -> None:
    if store.startswith("postgresql"):
        # a worker paused inside a commit holds the store's write lock until the server ends its
        # session: 5 s here instead of 60 (the others wait for it, they are never wrong)
        store += "&idle_in_transaction_s=5"
    seed = random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    print(f"seed={seed} store={store} log={log or 'file'}")
    events = generate(seed, 5_000)
    group = Group(tmp_path, store, log)
    try:
        group.append(events[:1_000])
        live = [group.start(), group.start()]
        killed = 0
        chunks = [events[i:i + 250] for i in range(1_000, len(events), 250)]
        pause_at = rnd.randrange(2, len(chunks) - 4)
        for n, chunk in enumerate(chunks):
            if n == pause_at:   # this chunk arrives while a worker is paused: it must not count it
                pause_one(group, live, lambda: group.append(chunk))
                continue
            group.append(chunk)
            time.sleep(rnd.uniform(0.0, 0.6))
            if rnd.random() < 0.35:
                victim = live.pop(rnd.randrange(len(live)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed += 1
                for _ in range(rnd.choice([1, 1, 2])):   # sometimes two rivals at once
                    live.append(group.start())
            if len(live) < 2:
                live.append(group.start())
        print(f"killed {killed} workers, started {len(group.procs)}")
        check_exact(group)
    finally:
        group.stop_all()
    for proc in group.procs:
        assert "Traceback" not in group.errors(proc), group.errors(proc)


def pause_one(group: Group, live: list[subprocess.Popen[bytes]], meanwhile: Callable[[], None]) -> None:
    """SIGSTOP a worker that owns partitions past its lease while events arrive, check the
    others took its partitions, SIGCONT it: it says its micro-batch is void."""
    wait_for(lambda: any(group.owns(p) for p in live), "a worker owns partitions")
    paused = next(p for p in live if group.owns(p))
    held = group.owns(paused)
    paused.send_signal(signal.SIGSTOP)
    others = [p for p in live if p is not paused]

    def taken() -> bool:
        owned = {q for p in others for q in (group.owns(p) or [])}
        return set(held or []) <= owned

    wait_for(taken, f"the partitions {held} of the paused worker are taken over")
    meanwhile()
    before = len(group.output(paused))
    paused.send_signal(signal.SIGCONT)
    # its commit is refused: by the fence (LeaseLost), or -- when it was paused inside a commit
    # for longer than the store keeps an idle transaction -- by the server ending its session
    wait_for(lambda: VOID in group.output(paused)[before:], "the resumed worker finds its micro-batch void")


@pytest.fixture(params=["file", "nats"])
def log(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The log: files in the data directory, or a fresh NATS JetStream log (tests/logs.py)."""
    if request.param == "file":
        yield None
        return
    nats_or_skip()
    url = fresh_nats_url()
    yield url
    delete_streams(url)


def test_a_joining_worker_takes_partitions_and_a_leaving_one_hands_them_back(tmp_path: Path, store: str,
                                                                             log: str | None) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed} store={store} log={log or 'file'}")
    events = generate(seed, 1_200)
    group = Group(tmp_path, store, log)
    try:
        group.append(events[:600])
        first = group.start()
        wait_for(lambda: group.owns(first) == list(range(PARTITIONS)), "the first worker owns every partition")
        second = group.start()
        wait_for(lambda: group.owns(second) == [1, 3] and group.owns(first) == [0, 2],
                 "the partitions are shared between the two workers")
        group.append(events[600:])
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, group.errors(second)
        assert "partitions released" in group.output(second)
        wait_for(lambda: group.owns(first) == list(range(PARTITIONS)), "the first worker takes them all back")
        check_exact(group)
    finally:
        group.stop_all()


def test_after_a_batch_run_workers_start_at_its_cutoff_and_later_batch_runs_are_refused(tmp_path: Path,
                                                                                         store: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed} store={store}")
    events = generate(seed, 1_500)
    group = Group(tmp_path, store)
    try:
        group.append(events[:700])
        batch = subprocess.run(group.cli("run", str(group.flow), "--mode", "batch"), capture_output=True,
                               text=True, timeout=120)
        assert batch.returncode == 0, batch.stderr
        with fluvial.open(group.directory, store=store) as ws:
            assert ws.store.view("level_by_color").cutoff   # a batch version, and its hand-over
            assert ws.store.checkpoint_token(f"stream:{NAME}") is not None
        group.append(events[700:])
        workers = [group.start(), group.start()]
        check_exact(group)   # batch version ⊕ the workers' realtime rows: each event once
        with fluvial.open(group.directory, store=store) as ws:
            assert ws.store.checkpoint_token(f"stream:{NAME}") is None   # handed to the workers
        again = subprocess.run(group.cli("run", str(group.flow), "--mode", "batch"), capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 1 and "is run by `fluvial worker` processes" in again.stderr, again.stderr
        assert all(w.poll() is None for w in workers)
        check_exact(group)   # the refused batch run changed nothing
    finally:
        group.stop_all()
