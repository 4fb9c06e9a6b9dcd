"""A worker group for tests: a data directory, its log (appended by the test process), a flow
and ``fluvial worker`` processes started on it, and the brute force over what the log holds.

Used by test_workers.py and test_workers_layers.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fluvial
from fluvial import Event, LogConfig
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.groups import partition_id
from fluvial.testing import make_events

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


class Group:
    """The data directory, its log (appended by this process) and the worker processes."""

    def __init__(self, tmp_path: Path, store: str, log: str | None = None, flow: str = FLOW) -> None:
        self.directory, self.flow, self.store, self.log = tmp_path / "data", tmp_path / "flow.py", store, log
        self.flow.write_text(flow)
        self.ws = fluvial.open(self.directory, writer=True, log=log,
                               log_config=LogConfig(partitions=PARTITIONS, fsync="never"))
        self.out = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.appended: list[Event] = []

    def cli(self, *args: str) -> list[str]:
        log = ["--log", self.log] if self.log is not None else []
        return [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(self.directory),
                "--store", self.store, *log, *args]

    def start(self, flow: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a worker on the group's flow file (or ``flow``)."""
        i = len(self.procs)
        with open(self.out / f"w{i}.out", "wb") as out, open(self.out / f"w{i}.err", "wb") as err:
            proc = subprocess.Popen(self.cli("worker", str(flow or self.flow), "--batch-interval-ms", "20",
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

    def wait_serving(self, proc: subprocess.Popen[bytes]) -> None:
        """Until ``proc`` is up (its signal handlers installed: SIGTERM stops it cleanly)."""
        wait_for(lambda: "serving" in self.output(proc) or proc.poll() is not None, "the worker starts")

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


def check_exact(group: Group, want: Callable[[list[Event]], dict[str, dict[Any, Any]]] = brute_force) -> None:
    """Every acknowledged event is in the log once, the workers commit all of it, and the views
    equal ``want`` (the brute force) over it."""
    logged = group.logged()
    assert len(logged) == len(group.appended)   # every acknowledged event stored, once
    wait_for(lambda: group.committed() == len(logged), "the workers commit the whole log")
    assert group.views() == want(logged)
