"""``fluvial worker`` groups sharing a pipeline's partitions, as real processes (issue 10, item 4).

* Workers SIGKILLed at random moments while events are appended, new ones (sometimes two at
  once) started in their place, one SIGSTOPped past its lease and then resumed: its
  partitions are taken over, its late commit is refused, and after the end every view
  equals the brute force over exactly the events the log acknowledged.
* A worker joining takes partitions from the one running (the rebalance shows in their
  output); a worker leaving hands its partitions back.
* A pipeline is run by workers or by a single runner (`fluvial run --mode stream`), never
  both: the second refuses, naming the first.  Batch runs before and while workers run hand
  over to them (more in test_workers_layers.py).

On the SQLite store of the data directory and on PostgreSQL (a fresh schema: tests/stores.py).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fluvial
from logs import delete_streams, fresh_nats_url, nats_or_skip
from stores import store_url_of
from worker_group import NAME, PARTITIONS, VOID, Group, check_exact, generate, wait_for

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url_of(request.param, tmp_path / "data") as url:
        yield url


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


def within(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pause_one(group: Group, live: list[subprocess.Popen[bytes]], meanwhile: Callable[[], None]) -> None:
    """SIGSTOP a worker that owns partitions past its lease while events arrive, check the
    others took its partitions, SIGCONT it: it says its micro-batch is void or gives them up."""
    for _ in range(5):
        wait_for(lambda: any(group.owns(p) for p in live), "a worker owns partitions")
        paused = next(p for p in live if group.owns(p))
        held = group.owns(paused)
        paused.send_signal(signal.SIGSTOP)
        others = [p for p in live if p is not paused]

        def taken() -> bool:
            owned = {q for p in others for q in (group.owns(p) or [])}
            return set(held or []) <= owned

        if within(taken, 30.0):
            break
        # Stopped inside a SQLite write transaction, it holds the file's write lock, and the others
        # wait for it (docs/guarantees.md, "Worker groups": they stall, they are never wrong):
        # let it go on, and stop a worker again at another moment.
        paused.send_signal(signal.SIGCONT)
        time.sleep(0.5)
    else:
        raise AssertionError("five times, the partitions of a paused worker were not taken over within 30 s")
    meanwhile()
    before = len(group.output(paused))
    paused.send_signal(signal.SIGCONT)
    # It notices before it counts anything: its commit is refused (by the fence, LeaseLost, or --
    # paused inside a commit longer than the store keeps an idle transaction -- by the server
    # ending its session), or its membership heartbeat saw the loss first and it rejoined and
    # dropped the partitions before its next micro-batch. Either way it says so; the exact views
    # at the end show that nothing it did while late was counted.
    def noticed() -> bool:
        said = group.output(paused)[before:]
        return VOID in said or "owns partitions" in said

    wait_for(noticed, "the resumed worker finds its micro-batch void or gives up its partitions")


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
        # two each; which two depends on the membership slots they hold (a worker slowed down
        # past its lease by a busy machine joins again, in another slot)
        def shared() -> bool:
            a, b = group.owns(first) or [], group.owns(second) or []
            return len(a) == len(b) == PARTITIONS // 2 and sorted(a + b) == list(range(PARTITIONS))

        wait_for(shared, "the partitions are shared between the two workers")
        group.append(events[600:])
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, group.errors(second)
        assert "partitions released" in group.output(second)
        wait_for(lambda: group.owns(first) == list(range(PARTITIONS)), "the first worker takes them all back")
        check_exact(group)
    finally:
        group.stop_all()


def test_after_a_batch_run_workers_start_at_its_cutoff_and_later_batch_runs_hand_over_to_them(
        tmp_path: Path, store: str) -> None:
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
            first = ws.store.view("level_by_color")
            assert first.cutoff is not None and first.cutoff   # a batch version, and its hand-over
            assert ws.store.checkpoint_token(f"stream:{NAME}") is not None
        group.append(events[700:1_100])
        workers = [group.start(), group.start()]
        check_exact(group)   # batch version ⊕ the workers' realtime rows: each event once
        with fluvial.open(group.directory, store=store) as ws:
            assert ws.store.checkpoint_token(f"stream:{NAME}") is None   # handed to the workers
        group.append(events[1_100:])
        again = subprocess.run(group.cli("run", str(group.flow), "--mode", "batch"), capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        with fluvial.open(group.directory, store=store) as ws:
            second = ws.store.view("level_by_color")
            assert second.alias_version != first.alias_version and second.cutoff is not None
            cut = [int(second.cutoff.get(p, 0)) for p in range(PARTITIONS)]
            assert sum(cut) > sum(int(first.cutoff.get(p, 0)) for p in range(PARTITIONS))
        assert all(w.poll() is None for w in workers)
        check_exact(group)   # the new version ⊕ what the workers commit past its cut-off: each event once
    finally:
        group.stop_all()
