"""The assignment of a pipeline's partitions to workers (:mod:`fluvial.state.groups`, :mod:`fluvial.layers.workers`).

* :func:`assign`: every partition to exactly one member, a fair share each (sizes differ
  by at most one), the same answer for the same membership in any order.
* The protocol, with real :class:`Worker` objects on one SQLite store (each its own
  connection and identity) under random joins, cooperative leaves and rebalances in any
  order: at every moment no partition is owned by two workers, each owned partition's
  lease in the store is its owner's epoch; once the membership stops changing (every worker
  joined), two rounds of rebalances (one releases the extras, one claims) converge to the fair
  assignment of every partition.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fluvial
from fluvial.layers.workers import Worker
from fluvial.serving.sqlite import SqliteStore
from fluvial.state.groups import assign, partition_id
from fluvial.state.ownership import Owner


@given(st.integers(0, 64), st.lists(st.integers(0, 100), max_size=20))
def test_assign_gives_every_partition_to_one_member_fairly(partitions: int, members: list[int]) -> None:
    shares = assign(partitions, members)
    assert sorted(shares) == sorted(set(members))
    owned = [p for share in shares.values() for p in share]
    if members:
        assert sorted(owned) == list(range(partitions))   # each exactly once
        sizes = [len(s) for s in shares.values()]
        assert max(sizes) - min(sizes) <= 1
    else:
        assert owned == []
    assert assign(partitions, list(reversed(members))) == shares


PARTITIONS = 5
FLOW = fluvial.Pipeline("assigned")
FLOW.from_log("reading").map(lambda e: (e.device, 1)).aggregate_by_key(fluvial.Count()).to_view("counts")

steps = st.lists(st.tuples(st.sampled_from(["join", "leave", "rebalance"]), st.integers(0, 9)),
                 min_size=1, max_size=14)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_joins_and_leaves_in_any_order_never_share_a_partition_and_converge(tmp_path_factory, script) -> None:
    directory: Path = tmp_path_factory.mktemp("group")
    ws = fluvial.open(directory, writer=True, log_config=fluvial.LogConfig(partitions=PARTITIONS, fsync="never"))
    live: list[Worker] = []
    made = 0

    def join() -> None:
        nonlocal made
        made += 1
        owner = Owner(os.getpid(), socket.gethostname(), f"worker {made}", None)
        store = SqliteStore(str(directory / "views.db"))
        live.append(Worker(log=ws.log, store=store, pipelines=[FLOW], owner=owner, say=lambda _: None))

    try:
        for action, pick in script:
            if action == "join" or not live:
                join()
            elif action == "leave":
                worker = live.pop(pick % len(live))
                worker.close()
                worker.store.close()
            else:
                live[pick % len(live)].rebalance()
            check_exclusive(live, ws.store)
        for worker in live:      # a worker joins the membership at its first rebalance
            worker.rebalance()
        for _ in range(2):       # the membership settled: one round releases the extras, one claims
            for worker in live:
                worker.rebalance()
        check_exclusive(live, ws.store)
        shares = list(assign(PARTITIONS, [w.groups[0].slot for w in live]).values())
        if live:
            assert sorted(w.owned()["assigned"] for w in live) == sorted(shares)
    finally:
        for worker in live:
            worker.close()
            worker.store.close()
        ws.close()


def check_exclusive(workers: list[Worker], store: SqliteStore) -> None:
    seen: dict[int, Worker] = {}
    for worker in workers:
        for p, run in worker.groups[0].runs.items():
            assert p not in seen, f"partition {p} owned by two workers"
            seen[p] = worker
            holder = store.holder(partition_id("assigned", p))
            lease = run.runner._ownership.lease if run.runner._ownership is not None else None
            assert holder is not None and lease is not None and holder.epoch == lease.epoch
            assert holder.owner == worker.owner
