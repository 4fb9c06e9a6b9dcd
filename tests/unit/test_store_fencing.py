"""The store's side of the layer hand-over: fenced checkpoints and late counts per version,
on every store (``store_url``: SQLite, PostgreSQL).

Random operation counts from a printed seed (``FLUVIAL_TEST_SEED``); every expected
count is the sum of what the test added, kept beside the store.
"""

from __future__ import annotations

import os
import random

import pytest

from fluvial.aggregators import Count
from fluvial.backends import open_store
from fluvial.errors import CheckpointFenced

SEED = int(os.environ.get("FLUVIAL_TEST_SEED") or random.randrange(2**32))


@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


def test_a_checkpoint_is_written_only_on_top_of_the_one_read(store_url, rng):
    with open_store(store_url) as a, open_store(store_url) as b:
        a.define_view("hits", aggregator=Count())
        with a.transaction() as txn:
            assert txn.checkpoint_token("r") is None
            token = txn.set_checkpoint("r", b"first", expect=None)
        for _ in range(rng.randint(1, 5)):        # one writer going on: each commit on the last
            with a.transaction() as txn:
                txn.merge_rows("hits", [("k", None, 1)])
                token = txn.set_checkpoint("r", b"next", expect=token)
        with b.transaction() as txn:               # another writer replaces it (a hand-over)
            txn.set_checkpoint("r", b"handed over")
        before = a.query("hits")
        with pytest.raises(CheckpointFenced, match="replaced by another writer"), a.transaction() as txn:
            txn.merge_rows("hits", [("k", None, 1)])
            txn.set_checkpoint("r", b"stale", expect=token)
        assert a.query("hits") == before             # the whole micro-batch was voided
        with a.transaction() as txn:
            assert txn.get_checkpoint("r") == b"handed over"
            with pytest.raises(CheckpointFenced):
                txn.set_checkpoint("r", b"from scratch", expect=None)   # "none" is not current either


def test_late_counts_once_per_version(store_url, rng):
    """A replay counts into its version; switching it in replaces the served count;
    a batch version carries the count of what it covers; rolling back restores."""
    with open_store(store_url) as store:
        store.define_view("hits", aggregator=Count())
        live = rng.randint(1, 9)
        with store.transaction() as txn:
            txn.add_late_events("hits", live)
            sealed = txn.seal_realtime("hits")
            txn.add_late_events("hits", after := rng.randint(0, 5))   # a micro-batch after the seal
        batch = store.begin_version("hits")
        store.publish_version("hits", batch, {0: 10}, drop_realtime=True, realtime_through=sealed)
        assert store.view("hits").late_events == live + after         # a count: not reset
        replay = store.begin_version("hits")
        with store.transaction() as txn:
            txn.add_late_events("hits", 0, part=replay)
            txn.add_late_events("hits", found := rng.randint(0, 9), part=replay)
        assert store.view("hits").late_events == live + after         # not added to the served count
        with store.transaction() as txn:
            txn.publish("hits", replay, {0: 20}, drop_realtime=True)
        assert store.view("hits").late_events == found
        with store.transaction() as txn:                              # roll back to the batch version
            txn.publish("hits", batch, {0: 10}, drop_realtime=True)
        assert store.view("hits").late_events == live                 # counted up to its cut-off
