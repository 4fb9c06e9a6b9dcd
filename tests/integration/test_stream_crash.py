"""Exactly-once effect (DESIGN principle 5): SIGKILL the stream runner, restart it, same views.

A child process (this file run as a script) runs the stream runner over a log
of generated events with small micro-batches; the pipeline is the reference
catalog (windowed and keyed views, per-key state, a join, ``save_to``
tables).  The parent kills it with SIGKILL at random moments, restarts it
each time from its checkpoint, and finally lets it run until it has caught
up with the log.  The views, their late counts and the ``save_to`` tables
must then equal those of an uninterrupted run and the brute force.

The child can also kill itself inside the commit of its N-th micro-batch
(``--die-at N --die-where ...``): between two writes of the transaction, just
before the checkpoint is written, just before COMMIT, or just after it.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import fluvial
from fluvial import Event, LogConfig, StreamConfig
from fluvial.state.checkpoint import Checkpoint
from fluvial.testing import RunResult, make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a child script too
from device_time_world import as_devices_deliver, clock_ahead

PARTITIONS = 4
WHERE = ("mid_merge", "before_checkpoint", "before_commit", "after_commit")


def crash_pipeline() -> fluvial.Pipeline:
    return build_pipeline(CATALOG, name="crash")


def generate(seed: int, n: int) -> list[Event]:
    """Events of the last hour as devices deliver them (device time, issue 11): d1 and d2 offline
    for a while, then flushing their backlog; d0's clock two hours ahead (future-stamped)."""
    events = make_events(seed, n, devices=24, kinds=["reading", "reading", "reading", "status"],
                         start_ms=int(time.time() * 1000) - 3600_000, step_ms=150, out_of_order_ms=3_000,
                         late_fraction=0.02, late_by_ms=60_000, duplicate_fraction=0.05)
    return as_devices_deliver(events, {"d1": (0.2, 0.5), "d2": (0.4, 0.9)})


def write_log(directory: Path, events: list[Event]) -> None:
    with fluvial.open(directory, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
        for i in range(0, len(events), 50):  # small appends, as ingest makes them
            ws.log.append(events[i:i + 50])


# -- the child ----------------------------------------------------------------------------------

def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _DyingTxn:
    """Forwards to the store's transaction.  The transactions that write (the
    micro-batch commits, not the runner's checkpoint read at start) are
    counted; in the ``die_at``-th one the process SIGKILLs itself at ``where``."""

    commits = 0

    def __init__(self, txn: Any, where: str, die_at: int) -> None:
        self._txn, self._where, self._die_at = txn, where, die_at
        self._merges = 0
        self.dying = False

    def _write(self) -> None:
        if self._merges == 0 and not self.dying:
            _DyingTxn.commits += 1
            self.dying = _DyingTxn.commits == self._die_at

    def merge_rows(self, *args: Any, **kwargs: Any) -> int:
        self._write()
        n = self._txn.merge_rows(*args, **kwargs)
        self._merges += 1
        if self.dying and self._where == "mid_merge" and self._merges == 2:
            _die()
        return n  # type: ignore[no-any-return]

    def set_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        self._write()
        if self.dying and self._where == "before_checkpoint":
            _die()
        token = self._txn.set_checkpoint(*args, **kwargs)   # the fencing token: the runner keeps it
        if self.dying and self._where == "before_commit":
            _die()
        return token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--max-batch-records", type=int, required=True)
    parser.add_argument("--die-at", type=int, default=0, help="die in the commit of this micro-batch")
    parser.add_argument("--die-where", choices=WHERE, default="before_commit")
    args = parser.parse_args(argv)
    ws = fluvial.open(args.directory)
    store = ws.store
    if args.die_at:
        commit = store.transaction

        @contextmanager
        def transaction() -> Iterator[Any]:
            with commit() as txn:
                proxy = _DyingTxn(txn, args.die_where, args.die_at)
                yield proxy
            if proxy.dying and args.die_where == "after_commit":
                _die()

        store.transaction = transaction  # fault injection in this process only
    runner = ws.stream_runner(StreamConfig(batch_interval_ms=0, max_batch_records=args.max_batch_records))
    print("ready", flush=True)
    runner.run(crash_pipeline(), until_caught_up=True)
    ws.close()


# -- the parent ---------------------------------------------------------------------------------

def start_child(directory: Path, max_batch_records: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", __file__, str(directory), "--max-batch-records",
         str(max_batch_records), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.wait()
        raise AssertionError(f"child did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc


def progress(directory: Path) -> tuple[int, int]:
    """(micro-batches committed, log records consumed) according to the checkpoint."""
    with fluvial.open(directory) as ws, ws.store.transaction() as txn:
        blob = txn.get_checkpoint("stream:crash")
    if blob is None:
        return 0, 0
    cp = Checkpoint.loads(blob)
    return cp.micro_batches, sum(cp.offsets)


def finish(directory: Path, max_batch_records: int) -> None:
    proc = start_child(directory, max_batch_records)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def uninterrupted(events: list[Event], directory: Path, max_batch_records: int) -> RunResult:
    write_log(directory, events)
    with fluvial.open(directory) as ws:
        config = StreamConfig(batch_interval_ms=0, max_batch_records=max_batch_records)
        ws.stream_runner(config).run(crash_pipeline(), until_caught_up=True)
        return read_results(crash_pipeline(), ws.store)


def check_against_uninterrupted_and_brute(directory: Path, events: list[Event], tmp_path: Path,
                                          max_batch_records: int) -> None:
    with fluvial.open(directory) as ws:
        crashed = read_results(crash_pipeline(), ws.store)
    clean = uninterrupted(events, tmp_path / "clean", max_batch_records)
    for name in clean.views:
        assert crashed.views[name] == clean.views[name], f"view {name}"
    assert crashed.late == clean.late
    assert crashed.tables == clean.tables
    assert crashed.views == expected_views(CATALOG, events, partitions=PARTITIONS, stream=True, future=clock_ahead)
    assert crashed.late == expected_late(CATALOG, events, partitions=PARTITIONS, future=clock_ahead)
    assert crashed.tables == expected_tables(CATALOG, events, partitions=PARTITIONS, stream=True, future=clock_ahead)


@pytest.mark.slow
@pytest.mark.serial
def test_sigkill_at_random_moments_then_restart(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    events = generate(seed, 30_000)   # long enough for 5 kills on a quiet machine too
    directory = tmp_path / "crashed"
    write_log(directory, events)
    max_batch_records = rnd.choice([60, 100])
    kills, history = 0, []
    for _ in range(12):
        proc = start_child(directory, max_batch_records)
        time.sleep(rnd.uniform(0.05, 0.8))
        if proc.poll() is not None:  # finished before the kill: done early
            proc.communicate()
            assert proc.returncode == 0
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        history.append(progress(directory))
        if kills >= 6:
            break
    print(f"max_batch_records={max_batch_records} kills={kills} progress after each kill={history}")
    total = sum(1 for _ in {(e.device, e.seq) for e in events})
    assert kills >= 5, f"the run finished after {kills} kills: slow the kills down"
    assert any(0 < consumed < total for _, consumed in history), "no kill landed mid-run"
    finish(directory, max_batch_records)
    assert progress(directory)[1] == total
    check_against_uninterrupted_and_brute(directory, events, tmp_path, max_batch_records)


@pytest.mark.slow
@pytest.mark.parametrize("where", WHERE)
def test_sigkill_inside_the_commit(tmp_path: Path, where: str) -> None:
    """Tiny micro-batches; the child dies inside the commit of a random micro-batch, twice."""
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed} where={where}")
    rnd = random.Random(seed)
    events = generate(seed, 800)
    directory = tmp_path / "crashed"
    write_log(directory, events)
    max_batch_records = rnd.choice([4, 8])
    for _ in range(2):
        before, _ = progress(directory)
        die_at = rnd.randint(1, 25)
        proc = start_child(directory, max_batch_records, "--die-at", str(die_at), "--die-where", where)
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL
        # The micro-batch it died in is committed only if it died after COMMIT.
        committed = die_at if where == "after_commit" else die_at - 1
        assert progress(directory)[0] == before + committed
    finish(directory, max_batch_records)
    check_against_uninterrupted_and_brute(directory, events, tmp_path, max_batch_records)


if __name__ == "__main__":
    child(sys.argv[1:])
