"""Rival stream runners of one pipeline, as real ``fluvial run`` processes (issue: seams and fencing).

* Several runners started together on one data directory -- some plain (refused while
  another holds the pipeline), some standbys (``--wait``), some taking over
  (``--take-over``) -- while events are appended and random runners are killed with
  SIGKILL; new rivals join now and then.  After a final run the views, late counts and
  ``save_to`` tables equal the brute force over every event of the log, and every runner
  that stopped on its own says why (refused: who holds the pipeline; fenced: who took it).
* A runner paused with SIGSTOP past its lease: a standby takes over and catches up; the
  paused one, resumed with SIGCONT, commits nothing and says it was taken over.

On the SQLite store of the data directory, on PostgreSQL (``--store
postgresql://...``, a fresh schema) and on Cassandra (``--store cassandra://...``, a fresh
keyspace: tests/stores.py).  On Cassandra the paused runner is stopped at any moment, inside
a commit too: it then holds the store's write lock until that runs out, and its commit must
come to nothing when it wakes (the zombie writer of docs/guarantees.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fluvial
from device_time_world import as_devices_deliver, clock_ahead
from fluvial import Event, LogConfig
from fluvial.serving.postgres.schema import parse_url, write_lock_key
from fluvial.state.checkpoint import Checkpoint
from fluvial.testing import make_events, read_results
from fluvial.testing.catalog import CATALOG, build_pipeline, expected_late, expected_tables, expected_views
from stores import store_url_of

PARTITIONS = 4
NAME = "rivals"
FLOW = f"""from fluvial.testing.catalog import CATALOG, build_pipeline

{NAME} = build_pipeline(CATALOG, name={NAME!r})
"""
REFUSED = "is held by pid"          # OwnedElsewhere names the holder
FENCED = "no longer holds"          # LeaseLost: another runner took the pipeline over


def generate(seed: int, n: int) -> list[Event]:
    """Events of the last hour as devices deliver them (device time, issue 11): d1 and d2 offline
    for a while, then flushing their backlog; d0's clock two hours ahead (future-stamped)."""
    events = make_events(seed, n, devices=24, kinds=["reading", "reading", "reading", "status"],
                         start_ms=int(time.time() * 1000) - 3600_000, step_ms=150, out_of_order_ms=3_000,
                         late_fraction=0.02, late_by_ms=60_000, duplicate_fraction=0.05)
    return as_devices_deliver(events, {"d1": (0.2, 0.5), "d2": (0.4, 0.9)})


class Log:
    """The log, appended in small batches as ingest would, while the runners read it."""

    def __init__(self, directory: Path) -> None:
        self.ws = fluvial.open(directory, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never"))

    def append(self, events: list[Event]) -> None:
        for i in range(0, len(events), 50):
            self.ws.log.append(events[i:i + 50])

    def size(self) -> int:
        return sum(self.ws.log.end_offsets())

    def close(self) -> None:
        self.ws.close()


STORE = {"url": ""}
"""The ``--store`` URL of the test running (set by the ``store`` fixture)."""


@pytest.fixture(params=["sqlite", "postgresql", "cassandra"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url_of(request.param, tmp_path / "data") as url:
        STORE["url"] = url
        yield url


def cli(directory: Path) -> list[str]:
    return [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(directory), "--store", STORE["url"]]


def open_ws(directory: Path) -> fluvial.Workspace:
    return fluvial.open(directory, store=STORE["url"])


def runner(directory: Path, flow: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli(directory), "run", str(flow),
         "--mode", "stream", "--batch-interval-ms", "0", "--max-batch-records", "40", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epoch(directory: Path) -> int | None:
    """The pipeline's ownership epoch (how many claims it has seen), None before the first."""
    with open_ws(directory) as ws:
        holder = ws.store.holder(f"stream:{NAME}")
    return None if holder is None else holder.epoch


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)


def consumed(directory: Path) -> int:
    with open_ws(directory) as ws, ws.store.transaction() as txn:
        blob = txn.get_checkpoint(f"stream:{NAME}")
    return 0 if blob is None else sum(Checkpoint.loads(blob).offsets)


def final_run_and_check(directory: Path, flow: Path, events: list[Event]) -> None:
    done = subprocess.run([*cli(directory), "run", str(flow), "--mode", "stream", "--until-caught-up", "--wait"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open_ws(directory) as ws:
        got = read_results(build_pipeline(CATALOG, name=NAME), ws.store)
    assert got.views == expected_views(CATALOG, events, partitions=PARTITIONS, stream=True, future=clock_ahead)
    assert got.late == expected_late(CATALOG, events, partitions=PARTITIONS, future=clock_ahead)
    assert got.tables == expected_tables(CATALOG, events, partitions=PARTITIONS, stream=True, future=clock_ahead)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (Linux: ``SigCgt`` of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def settle(procs: dict[int, tuple[str, subprocess.Popen[str]]], killed: set[int]) -> dict[str, int]:
    """Stop the live runners (SIGTERM: after their micro-batch), and check why each one ended.

    A runner gets its SIGTERM once it has installed its handler: one still starting up (a busy
    machine takes seconds to import) would die of the signal (-15) before it could say anything;
    one that already stopped on its own (its handler gone again) is left to exit."""
    for _, proc in procs.values():
        deadline = time.monotonic() + 60
        while proc.poll() is None and not catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    ended = {pid: (role, proc, proc.communicate(timeout=120)[1]) for pid, (role, proc) in procs.items()}
    outcomes = {"killed": 0, "stopped": 0, "refused": 0, "fenced": 0}
    for pid, (role, proc, err) in ended.items():
        if pid in killed and proc.returncode == -signal.SIGKILL:
            outcomes["killed"] += 1   # (a victim that had just ended on its own is judged below)
        elif proc.returncode == 0 or (proc.returncode == -signal.SIGTERM and not (REFUSED in err or FENCED in err)):
            # stopped by the SIGTERM above; ended by it (-15) only outside `fluvial run`'s handler,
            # which is there for all of its work: still starting (a loaded machine), or exiting
            assert "Traceback" not in err, err
            outcomes["stopped"] += 1
        else:
            # every runner that stopped on its own says why, in one line (one that was exiting
            # after saying it when the SIGTERM above came ends with that signal instead of 1)
            assert proc.returncode in (1, -signal.SIGTERM), (role, proc.returncode, err)
            assert REFUSED in err or FENCED in err, (role, err)
            assert "Traceback" not in err, err
            if FENCED in err:   # (it names the new holder too)
                outcomes["fenced"] += 1
            else:
                assert role == "plain", (role, err)   # standbys wait, take-overs take
                assert "--wait" in err and "--take-over" in err, err   # and how to proceed
                outcomes["refused"] += 1
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize(("store", "rivals"),   # 10 rivals on SQLite; 4 on the others keep the suite short
                         [("sqlite", 4), ("sqlite", 10), ("postgresql", 4), ("cassandra", 4)], indirect=["store"])
def test_rival_runners_killed_at_random_end_exact(tmp_path: Path, rivals: int, store: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    print(f"seed={seed} rivals={rivals} store={store}")
    events = generate(seed, 6_000)
    directory, flow = tmp_path / "data", tmp_path / "flow.py"
    flow.write_text(FLOW)
    log = Log(directory)
    first = len(events) // 2
    log.append(events[:first])
    # at least one of each: refused, standby, two taking over (the second fences the first)
    roles = ["plain", "wait", "take-over", "take-over"] + [rnd.choice(["plain", "wait", "take-over"])
                                                          for _ in range(rivals - 4)]
    roles = rnd.sample(roles, k=len(roles))
    flags = {"plain": (), "wait": ("--wait",), "take-over": ("--take-over",)}
    procs: dict[int, tuple[str, subprocess.Popen[str]]] = {}
    for role in roles:   # all at once
        proc = runner(directory, flow, *flags[role])
        procs[proc.pid] = (role, proc)
    killed: set[int] = set()
    try:
        run_rivals(directory, flow, log, events[first:], rnd, procs, killed, flags)
    except BaseException:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        raise
    log.close()
    time.sleep(1.0)
    progress = consumed(directory)
    outcomes = settle(procs, killed)
    print(f"outcomes={outcomes} consumed before the final run={progress}")
    assert outcomes["refused"] >= 1 and outcomes["fenced"] >= 1, outcomes
    assert outcomes["killed"] >= 2, outcomes
    final_run_and_check(directory, flow, events)


def run_rivals(directory: Path, flow: Path, log: Log, rest: list[Event], rnd: random.Random,
               procs: dict[int, tuple[str, subprocess.Popen[str]]], killed: set[int],
               flags: dict[str, tuple[str, ...]]) -> None:
    """Append the rest of the events in chunks; kill a random runner now and then, start new ones.

    First the rivals meet (whatever the machine's load, the waits are for what happened, not
    for a time): every take-over has claimed the pipeline, so the earlier ones are fenced and
    one of them has ended; then a plain runner comes while a live runner holds it, and is refused.
    """
    take_overs = [proc for role, proc in procs.values() if role == "take-over"]
    wait_for(lambda: (epoch(directory) or 0) >= len(take_overs), "every take-over claimed the pipeline")
    wait_for(lambda: any(proc.poll() is not None for proc in take_overs), "a fenced take-over ended")
    late = runner(directory, flow)   # a plain runner while the pipeline surely has a holder: refused
    procs[late.pid] = ("plain", late)
    wait_for(lambda: late.poll() is not None, "the late plain runner was refused")
    chunks = [rest[i:i + len(rest) // 6 + 1] for i in range(0, len(rest), len(rest) // 6 + 1)]
    for i, chunk in enumerate(chunks):
        log.append(chunk)
        time.sleep(rnd.uniform(0.2, 1.0))
        live = [pid for pid, (_, proc) in procs.items() if proc.poll() is None]
        if not live:   # every runner was killed or fenced: the pipeline gets a new one (to kill, too)
            role = rnd.choice(["wait", "take-over"])
            proc = runner(directory, flow, *flags[role])
            procs[proc.pid] = (role, proc)
            live = [proc.pid]
        if live and (i in (1, 3) or rnd.random() < 0.5):
            victim = rnd.choice(live)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        if rnd.random() < 0.5:
            role = rnd.choice(["plain", "wait", "take-over"])
            proc = runner(directory, flow, *flags[role])
            procs[proc.pid] = (role, proc)


def pause_outside_a_write(pid: int, db: Path) -> None:
    """SIGSTOP ``pid`` at a moment it does not hold the store's write lock (a process
    paused inside a transaction holds it: the others then wait for it, see
    docs/guarantees.md); its lease is then left to run out."""
    if STORE["url"].startswith("postgresql"):
        pause_outside_a_pg_write(pid)
        return
    if STORE["url"].startswith("cassandra"):   # anywhere: a paused writer loses the lock (LOCK_MS)
        os.kill(pid, signal.SIGSTOP)
        return
    import sqlite3

    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            conn.close()
    raise AssertionError("the runner always held the write lock")


def pause_outside_a_pg_write(pid: int) -> None:
    """SIGSTOP ``pid`` when its sessions hold no lock of the PostgreSQL store: neither the
    write lock (a commit) nor a lease row (a claim or renewal of its heartbeat)."""
    import psycopg

    target = parse_url(STORE["url"])
    with psycopg.connect(STORE["url"].split("?")[0], autocommit=True) as conn:
        for _ in range(100):
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.02)
            busy = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                "AND state <> 'idle'", (f"fluvial:{pid}",)).fetchone()
            held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                "AND (classid::bigint << 32 | objid::bigint) = %s",
                                (write_lock_key(target.schema),)).fetchone()
            if busy == (0,) and held == (0,):
                return
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError("the runner always held a lock of the store")


@pytest.mark.slow
def test_a_paused_runner_is_taken_over_and_commits_nothing_when_it_wakes(tmp_path: Path, store: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed} store={store}")
    events = generate(seed, 3_000)
    directory, flow = tmp_path / "data", tmp_path / "flow.py"
    flow.write_text(FLOW)
    log = Log(directory)
    log.append(events[:1_000])
    lease = ("--lease-ms", "1500")
    paused = runner(directory, flow, *lease)
    deadline = time.monotonic() + 60
    while consumed(directory) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    while consumed(directory) < log.size() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumed(directory) == log.size(), paused.stderr.read() if paused.poll() is not None else "stuck"
    pause_outside_a_write(paused.pid, directory / "views.db")
    try:
        stopped_at = consumed(directory)
        refused = subprocess.run([*cli(directory), "run", str(flow), "--mode", "stream", "--until-caught-up",
                                  *lease], capture_output=True, text=True, timeout=60)
        # refused at once if the lease is still running, else it ran (the machine was slow)
        if refused.returncode != 0:
            assert REFUSED in refused.stderr and f"pid {paused.pid}" in refused.stderr, refused.stderr
        standby = runner(directory, flow, "--wait", *lease)
        log.append(events[1_000:2_000])
        deadline = time.monotonic() + 120
        while consumed(directory) < log.size() and time.monotonic() < deadline:
            time.sleep(0.1)
        taken = consumed(directory)
        print(f"paused at {stopped_at} records; a plain rival exited {refused.returncode}; "
              f"the standby took over and reached {taken} of {log.size()}")
        assert taken > stopped_at, "the standby did not take over from the paused runner"
        standby.send_signal(signal.SIGTERM)
        _, err = standby.communicate(timeout=120)
        assert standby.returncode == 0, err
        log.append(events[2_000:])   # work for the paused runner when it wakes
        log.close()
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    _, err = paused.communicate(timeout=120)
    assert paused.returncode == 1 and FENCED in err and "Traceback" not in err, err
    assert "taken over" in err, err
    final_run_and_check(directory, flow, events)
