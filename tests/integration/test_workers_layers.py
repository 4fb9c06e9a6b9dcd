"""The batch layer and Kappa reprocessing of a pipeline whose speed layer ``fluvial worker``
processes share (issue 10, item 4: "the batch layer and Kappa reprocessing work against
the same log and store"), as real processes.

* While events are appended and workers are SIGKILLed and replaced at random moments,
  ``fluvial run --mode batch`` runs again and again, and ``fluvial reprocess`` replays
  the log into new versions and switches; some of those are SIGKILLed at a random moment
  too.  After the end every view (batch ⊕ realtime) equals the brute force over exactly
  the events the log acknowledged, and the partitions' checkpoints cover the whole log.
* A reprocess with new flow code switches the views; the workers still running the old
  code refuse the partitions (saying why) instead of counting with it; workers started
  with the new code go on from the switch, exact against the new code's brute force.
  A rollback goes back to the old code's version, and workers of the old code go on.

On the SQLite store of the data directory and on PostgreSQL (a fresh schema: tests/stores.py).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluvial import Event
from stores import store_url_of
from worker_group import FLOW, Group, brute_force, check_exact, generate

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url_of(request.param, tmp_path / "data") as url:
        yield url


class Jobs:
    """Batch runs and reprocessings as processes, one at a time, some SIGKILLed at random."""

    def __init__(self, group: Group, rnd: random.Random) -> None:
        self.group, self.rnd = group, rnd
        self.running: subprocess.Popen[str] | None = None
        self.kind = ""
        self.kill_at = 0.0
        self.done: Counter[str] = Counter()

    def start(self, kind: str) -> None:
        self.wait()
        args = (["run", str(self.group.flow), "--mode", "batch"] if kind == "batch" else
                ["reprocess", "level_by_color", "--flow", str(self.group.flow)])
        self.running = subprocess.Popen(self.group.cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.kind = kind
        # a third of them die at a random moment: computing, switching, or just before publishing
        self.kill_at = time.monotonic() + self.rnd.uniform(0.2, 2.5) if self.rnd.random() < 0.33 else float("inf")

    def poll(self) -> None:
        if self.running is not None and self.running.poll() is None and time.monotonic() >= self.kill_at:
            self.running.send_signal(signal.SIGKILL)
            self.running.communicate()
            self.done[f"{self.kind} killed"] += 1
            self.running = None

    def wait(self) -> None:
        proc = self.running
        if proc is None:
            return
        while proc.poll() is None:
            self.poll()
            if self.running is None:
                return
            time.sleep(0.02)
        out, err = proc.communicate()
        self.running = None
        if proc.returncode == -signal.SIGKILL:
            self.done[f"{self.kind} killed"] += 1
            return
        assert proc.returncode == 0, (self.kind, out, err)
        assert "Traceback" not in err, err
        self.done[self.kind] += 1


@pytest.mark.slow
def test_batch_runs_and_reprocessing_beside_workers_all_killed_at_random_views_exact(tmp_path: Path,
                                                                                     store: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    print(f"seed={seed} store={store}")
    events = generate(seed, 5_000)
    group = Group(tmp_path, store)
    jobs = Jobs(group, rnd)
    try:
        group.append(events[:800])
        if rnd.random() < 0.5:
            jobs.start("batch")   # sometimes before the first worker: its cut-off is taken for a single runner
        live = [group.start(), group.start()]
        for chunk in [events[i:i + 200] for i in range(800, len(events), 200)]:
            group.append(chunk)
            jobs.poll()
            time.sleep(rnd.uniform(0.0, 0.4))
            if jobs.running is None or jobs.running.poll() is not None:
                jobs.wait()
                roll = rnd.random()
                if roll < 0.45:
                    jobs.start("batch")
                elif roll < 0.6:
                    jobs.start("reprocess")
            if rnd.random() < 0.3:
                victim = live.pop(rnd.randrange(len(live)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                for _ in range(rnd.choice([1, 1, 2])):   # sometimes two rivals at once
                    live.append(group.start())
        jobs.wait()
        jobs.start("batch")   # one that is not killed, last
        jobs.kill_at = float("inf")
        jobs.wait()
        print(f"jobs: {dict(jobs.done)}; workers started: {len(group.procs)}")
        assert jobs.done["batch"] >= 1
        check_exact(group)
    finally:
        jobs.kill_at = float("inf")
        if jobs.running is not None:
            jobs.running.kill()
            jobs.running.communicate()
        group.stop_all()
    for proc in group.procs:
        assert "Traceback" not in group.errors(proc), group.errors(proc)


DOUBLED = FLOW.replace('e.payload["level"]))', 'e.payload["level"] * 2))')


def doubled(events: list[Event]) -> dict[str, dict[Any, Any]]:
    """The brute force of the new code: levels counted twice."""
    views = brute_force(events)
    views["level_by_color"] = {k: 2 * v for k, v in views["level_by_color"].items()}
    return views


def test_a_reprocess_with_new_code_stops_old_workers_and_a_rollback_goes_back(tmp_path: Path, store: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed} store={store}")
    assert DOUBLED != FLOW
    events = generate(seed, 2_000)
    group = Group(tmp_path, store)
    new_flow = tmp_path / "flow_v2.py"
    new_flow.write_text(DOUBLED)
    try:
        group.append(events[:700])
        old = [group.start(), group.start()]
        check_exact(group)
        group.append(events[700:1_000])
        done = subprocess.run(group.cli("reprocess", "level_by_color", "--flow", str(new_flow), "--keep-old"),
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        for worker in old:   # they run the old code: they refuse the partitions and stop, saying why
            assert worker.wait(timeout=120) == 1
            assert "written by other flow code than this worker runs" in group.errors(worker), group.errors(worker)
            assert "Traceback" not in group.errors(worker)
        group.append(events[1_000:1_500])
        new = [group.start(new_flow), group.start(new_flow)]
        check_exact(group, want=doubled)
        for worker in new:
            group.wait_serving(worker)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0, group.errors(worker)
        rolled = subprocess.run(group.cli("rollback", "level_by_color", "--flow", str(group.flow)),
                                capture_output=True, text=True, timeout=120)
        assert rolled.returncode == 0, rolled.stderr
        group.append(events[1_500:])
        refused = group.start(new_flow)   # the pipeline runs the old code again: the new one refuses
        assert refused.wait(timeout=120) == 1
        assert "written by other flow code" in group.errors(refused), group.errors(refused)
        group.start()
        group.start()
        check_exact(group)
    finally:
        group.stop_all()
