"""The commit protocol of the Cassandra store (fluvial.serving.cassandra.commit), driven to
its failure points on a real node: a writer that dies after its commit point (the next writer
rolls its commit forward), a writer that applies its commit late, after newer commits (it
changes nothing), and a writer paused past the write lock (its commit comes to nothing).
Each compares the view with a brute force over exactly the committed micro-batches."""

from __future__ import annotations

import os
import random
from collections import Counter

import pytest

from fluvial.aggregators import Count
from fluvial.backends import open_store
from fluvial.errors import CheckpointFenced, StoreError
from fluvial.serving.cassandra import commit

SEED = int(os.environ.get("FLUVIAL_TEST_SEED") or random.randrange(2**32))


@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


def batch(rng: random.Random) -> list[tuple[str, None, int]]:
    """Small micro-batches (their redo record in the lock row), and now and then one whose
    record is too big for it (in fluvial_redo)."""
    n = rng.randint(1, 60) if rng.random() < 0.7 else rng.randint(1_500, 2_500)
    return [(f"k{rng.randrange(3_000)}", None, rng.randint(1, 5)) for _ in range(n)]


def brute(batches: list[list[tuple[str, None, int]]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for rows in batches:
        for key, _, n in rows:
            total[key] += n
    return dict(total)


def view(store) -> dict[str, int]:
    return {row.key: row.value for row in store.query("v")}


def test_a_commit_left_unapplied_is_rolled_forward_once(cassandra_url: str, rng: random.Random,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    committed: list[list[tuple[str, None, int]]] = []
    with open_store(cassandra_url) as a, open_store(cassandra_url) as b:
        a.define_view("v", aggregator=Count())
        for _ in range(rng.randint(2, 5)):
            rows = batch(rng)
            with a.transaction() as txn:
                txn.merge_rows("v", rows)
            committed.append(rows)
        crashed = batch(rng) + [(f"big{i}", None, 1) for i in range(rng.choice([1, 2_000]))]
        real_apply = commit.apply
        monkeypatch.setattr(commit, "apply", lambda *args: (_ for _ in ()).throw(OSError("died")))
        with pytest.raises(StoreError, match="passed its commit point"), a.transaction() as txn:
            txn.merge_rows("v", crashed)
            txn.set_checkpoint("r", b"after-crash")
        committed.append(crashed)
        monkeypatch.setattr(commit, "apply", real_apply)
        with b.transaction() as txn:   # the next writer applies it first, then reads on top of it
            assert txn.get_checkpoint("r") == b"after-crash"
            rows = batch(rng)
            txn.merge_rows("v", rows)
        committed.append(rows)
        assert view(b) == brute(committed)
        with a.transaction() as txn:   # the dead writer's store object goes on, nothing twice
            rows = batch(rng)
            txn.merge_rows("v", rows)
        committed.append(rows)
        assert view(a) == view(b) == brute(committed)


def test_a_commit_applied_late_never_overwrites_newer_ones(cassandra_url: str, rng: random.Random,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[tuple[list, int]] = []
    real_apply = commit.apply

    def record(db, ops, seq):
        recorded.append((ops, seq))
        real_apply(db, ops, seq)

    monkeypatch.setattr(commit, "apply", record)
    committed = []
    with open_store(cassandra_url) as store:
        store.define_view("v", aggregator=Count())
        for _ in range(rng.randint(3, 6)):
            rows = batch(rng)
            with store.transaction() as txn:
                txn.merge_rows("v", rows)
                txn.save_rows("t", ["k", "n"], [(k, n) for k, _, n in rows])
            committed.append(rows)
        expected_table = {}
        for rows in committed:
            expected_table.update({k: n for k, _, n in rows})
        for ops, seq in rng.sample(recorded, k=len(recorded)):   # a zombie (or a roller) applies again
            real_apply(store._db, ops, seq)
        assert view(store) == brute(committed)
        assert {r["k"]: r["n"] for r in store.table_rows("t")} == expected_table


def test_a_writer_that_lost_the_write_lock_commits_nothing(cassandra_url: str, rng: random.Random,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    committed = []
    with open_store(cassandra_url) as a, open_store(cassandra_url) as b:
        a.define_view("v", aggregator=Count())
        monkeypatch.setattr(commit, "LOCK_MS", 300)   # a's lock runs out while it is "paused"
        with pytest.raises(CheckpointFenced, match="lost the write lock"), a.transaction() as txn:
            txn.merge_rows("v", batch(rng))
            txn.set_checkpoint("r", b"zombie")
            monkeypatch.setattr(commit, "LOCK_MS", 8_000)
            import time
            time.sleep(0.4)
            with b.transaction() as other:   # a rival takes the lock that ran out, and commits
                rows = batch(rng)
                other.merge_rows("v", rows)
                other.set_checkpoint("r", b"rival")
            committed.append(rows)
        with b.transaction() as txn:
            assert txn.get_checkpoint("r") == b"rival"
        assert view(a) == view(b) == brute(committed)
