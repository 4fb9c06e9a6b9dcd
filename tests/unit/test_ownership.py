"""Ownership epochs in the store (fluvial.state.ownership): who may claim, and that a
replaced holder can never commit again -- on every store (``store_url``: SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fluvial as fl
from fluvial.aggregators import Count
from fluvial.backends import open_store
from fluvial.errors import LeaseLost, OwnedElsewhere
from fluvial.serving.base import ViewStore
from fluvial.state.ownership import Lease, Owner, Ownership, claim


@pytest.fixture()
def store(store_url: str) -> Iterator[ViewStore]:
    s = open_store(store_url)
    s.define_view("hits", aggregator=Count())
    yield s
    s.close()


def rival(command: str = "rival", *, host: str | None = None, pid: int | None = None) -> Owner:
    """Another live process: our parent (alive as long as we are), or a process elsewhere."""
    pid = os.getppid() if pid is None else pid
    from fluvial.state.ownership import _process_start

    return Owner(pid, host or socket.gethostname(), command, _process_start(pid))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def hits(store: ViewStore) -> int:
    return sum(r.value for r in store.query("hits"))


def test_a_held_resource_is_refused_naming_its_holder(store: ViewStore) -> None:
    first = store.claim("stream:p", rival("fluvial run flows.py --mode stream"), lease_ms=60_000)
    assert first.epoch == 1
    with pytest.raises(OwnedElsewhere) as refused:
        store.claim("stream:p", Owner.this_process("me"), lease_ms=60_000, hint="Stop it first.")
    message = str(refused.value)
    assert f"pid {os.getppid()} on {socket.gethostname()}" in message
    assert "fluvial run flows.py --mode stream" in message and "since" in message and "epoch 1" in message
    assert message.endswith("Stop it first.")
    assert refused.value.holder.epoch == 1
    assert store.holder("stream:p").owner == first.owner   # the refusal changed nothing


def test_take_over_fences_the_old_holder_and_voids_its_whole_transaction(store: ViewStore) -> None:
    old = store.claim("stream:p", rival(), lease_ms=60_000)
    with store.transaction() as txn:   # the old holder commits while it holds the epoch
        txn.fence(old)
        txn.merge_rows("hits", [("a", None, 1)])
    new = store.claim("stream:p", Owner.this_process("new"), lease_ms=60_000, take_over=True)
    assert new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost) as lost, store.transaction() as txn:
        txn.merge_rows("hits", [("a", None, 5)])   # written before the fence: voided with it
        txn.set_checkpoint("stream:p", b"zombie")
        txn.fence(old)
    assert "epoch 1 was taken over" in str(lost.value) and "epoch 2" in str(lost.value)
    assert hits(store) == 1
    with store.transaction() as txn:
        assert txn.get_checkpoint("stream:p") is None
    with pytest.raises(LeaseLost):
        store.renew(old)
    store.renew(new)


def test_a_silent_holder_loses_the_resource_when_its_lease_runs_out(store: ViewStore) -> None:
    # a lease long enough that a busy machine's slow claim (Cassandra's are LWTs) comes well within it
    claimed = time.monotonic()
    old = store.claim("stream:p", rival(), lease_ms=2_000)
    with pytest.raises(OwnedElsewhere):
        store.claim("stream:p", Owner.this_process(), lease_ms=2_000)
    time.sleep(max(0.0, claimed + 2.3 - time.monotonic()))
    new = store.claim("stream:p", Owner.this_process(), lease_ms=2_000)
    assert new.epoch == 2
    with pytest.raises(LeaseLost):
        store.renew(old)   # woke up after the take-over: nothing it does counts


def test_a_dead_process_of_this_host_loses_it_at_once_one_elsewhere_only_by_its_lease(
        store: ViewStore) -> None:
    pid = dead_pid()
    store.claim("a", Owner(pid, socket.gethostname(), "killed", None), lease_ms=60_000)
    assert store.claim("a", Owner.this_process(), lease_ms=60_000).epoch == 2
    store.claim("b", Owner(pid, "another-host", "remote", None), lease_ms=60_000)
    with pytest.raises(OwnedElsewhere, match="another-host"):
        store.claim("b", Owner.this_process(), lease_ms=60_000)
    # the pid runs again, but it is another process (another start time): the old one is gone
    me = Owner.this_process()
    store.claim("c", Owner(me.pid, me.host, "previous user of this pid", (me.started or 0) + 1), lease_ms=60_000)
    assert store.claim("c", Owner.this_process(), lease_ms=60_000).epoch == 2


def test_epochs_only_grow_across_releases(store: ViewStore) -> None:
    first = store.claim("r", Owner.this_process(), lease_ms=60_000)
    store.release(first)
    assert store.holder("r").owner is None and store.holder("r").epoch == 1
    second = store.claim("r", rival(), lease_ms=60_000)
    assert second.epoch == 2
    store.release(first)   # a stale release changes nothing
    assert store.holder("r").owner == second.owner
    with pytest.raises(LeaseLost), store.transaction() as txn:
        txn.fence(first)


def test_the_heartbeat_keeps_a_lease_through_a_long_micro_batch_and_finds_a_take_over(
        store_url: str) -> None:
    store = open_store(store_url)
    other = open_store(store_url)
    # Cassandra renews with a lightweight transaction (Paxos, several round trips), which a busy
    # machine can stretch past 200 ms: its lease is longer, the test the same.
    lease_ms = 1_000 if store_url.startswith("cassandra") else 200
    try:
        owned = Ownership(store, claim(store, "stream:p", lease_ms=lease_ms))
        time.sleep(4 * lease_ms / 1000)   # four leases long, renewed every lease_ms / 4 by the heartbeat
        with pytest.raises(OwnedElsewhere):
            other.claim("stream:p", rival(), lease_ms=lease_ms)
        other.claim("stream:p", rival(), lease_ms=lease_ms, take_over=True)
        deadline = time.monotonic() + 5
        while owned.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LeaseLost):
            owned.check()
        owned.release()   # after a take-over: leaves the new holder alone
        assert other.holder("stream:p").owner == rival()
    finally:
        other.close()
        store.close()


def release_elsewhere(store: ViewStore, lease: Lease) -> None:
    other = store.reopen()
    assert other is not None
    other.release(lease)
    other.close()


def test_a_waiting_claim_gets_the_resource_when_the_holder_releases(store: ViewStore, store_url: str) -> None:
    held = store.claim("r", rival(), lease_ms=60_000)
    timer = threading.Timer(0.3, lambda: release_elsewhere(store, held))
    timer.start()
    told: list[Exception] = []
    started = time.monotonic()
    lease = claim(store, "r", lease_ms=60_000, wait_s=10, on_wait=told.append)
    assert lease.epoch == 2 and 0.2 < time.monotonic() - started < 5
    assert len(told) == 1 and isinstance(told[0], OwnedElsewhere)
    stop = threading.Event()
    stop.set()
    with pytest.raises(OwnedElsewhere), open_store(store_url) as elsewhere:   # a stop ends a wait at once
        claim(elsewhere, "r", rival("another"), lease_ms=60_000, wait_s=3600, stop=stop)


def test_a_second_stream_runner_is_refused_and_takes_over_only_when_asked(tmp_path: Path, store_url: str) -> None:
    """Runners in one process: the second waits for nothing, is refused, then takes over; the
    first's next micro-batch is void (LeaseLost) and the view counts every event once."""
    from fluvial.engine.stream import StreamRunner

    ws = fl.open(tmp_path / "d", writer=True, log_config=fl.LogConfig(partitions=2, fsync="never"), store=store_url)
    pipe = fl.Pipeline("owned")
    pipe.from_log("line").map(lambda e: (e.payload["w"], 1)).reduce_by_key(lambda a, b: a + b).to_view("words")
    ws.log.append([fl.Event(device="d", kind="line", ts=i, seq=i + 1, payload={"w": f"w{i % 3}"})
                   for i in range(30)])
    first = StreamRunner(log=ws.log, store=ws.store, batch_interval_ms=0, max_batch_records=4,
                         owner=rival("first"))
    run = first.start(pipe)
    assert run.step()
    second_store = open_store(store_url)
    try:
        second = StreamRunner(log=ws.log, store=second_store, batch_interval_ms=0, max_batch_records=4)
        with pytest.raises(OwnedElsewhere, match="--take-over"):
            second.run(pipe, until_caught_up=True)
        taker = StreamRunner(log=ws.log, store=second_store, batch_interval_ms=0, max_batch_records=4,
                             take_over=True)
        taker.run(pipe, max_batches=1)
        with pytest.raises(LeaseLost):
            run.step()
        first.release()
        taker.run(pipe, until_caught_up=True)
    finally:
        second_store.close()
    assert {r.key: r.value for r in ws.store.query("words")} == {"w0": 10, "w1": 10, "w2": 10}
    ws.close()

