"""The batch hand-over of a pipeline whose speed layer ``fluvial worker`` processes share,
partition by partition: every partition's cut-off and start are one decision.

Random interleavings of appends, rounds of two workers (each owns the partitions the
membership gives it: one, the other, or all when it is alone), workers leaving and
new ones joining, batch runs -- some while the workers commit (some of those
start from below the cut-off, having had no checkpoint when it was taken), some
that die before they publish, one whose cut-off was taken before any worker
marked the pipeline -- and Kappa reprocessings whose replay the workers commit
beside until the switch.  After every step the merged view ``batch ⊕ realtime`` must
equal a brute force over exactly the part of the log the store says it covers;
at the end, with the workers caught up, over the whole log.

    partition p:  |== version (cut-off p) ===|== realtime (worker) ==|   checkpoint p
    merged == Counter(words of log[p][0 : checkpoint p]) summed over p

On SQLite and PostgreSQL (fewer examples there, each in a schema of its own).
"""

from __future__ import annotations

import operator
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fluvial as fl
from fluvial.layers.kappa import reprocess
from fluvial.layers.pipelines import FlowSet
from fluvial.layers.workers import Worker
from fluvial.state.checkpoint import Checkpoint
from fluvial.state.groups import partition_id
from fluvial.state.ownership import Owner
from handover_world import PARTITIONS, WordsWorld, brute
from stores import postgres_or_skip, store_url_of

NAME = "shared"

# ("append", n) | ("round", worker) | ("replace", worker) | ("batch", inner) | ("dies", inner)
# | ("reprocess", inner): a Kappa replay of the whole log into new versions, then the switch
inner_ops = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 12)),
                               st.tuples(st.just("round"), st.integers(0, 1)),
                               st.tuples(st.just("replace"), st.integers(0, 1))), max_size=4)
operations = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 25)),
                                st.tuples(st.just("round"), st.integers(0, 1)),
                                st.tuples(st.just("replace"), st.integers(0, 1)),
                                st.tuples(st.just("batch"), inner_ops),
                                st.tuples(st.just("dies"), inner_ops),
                                st.tuples(st.just("reprocess"), inner_ops)), min_size=1, max_size=14)


def pipeline() -> fl.Pipeline:
    p = fl.Pipeline(NAME)
    words = p.from_log("line").flat_map(lambda e: e.payload["text"].split())
    words.map(lambda w: (w, 1)).reduce_by_key(operator.add).to_view("counts")
    return p


class World(WordsWorld):
    """The log, the store, two in-process workers (replaced now and then) and the batch layer."""

    def __init__(self, directory: Path, rng: random.Random, store_url: str) -> None:
        super().__init__(directory, rng, store_url)
        self.workers: list[Worker | None] = [None, None]
        self.generation = 0
        self.reprocesses = 0
        self.directory = directory

    def pipeline(self) -> fl.Pipeline:
        return pipeline()

    def do(self, op: tuple[str, Any]) -> None:
        kind, arg = op
        if kind == "append":
            self.append(arg)
        elif kind == "round":
            self.round(arg)
        elif kind == "replace":
            self.leave(arg)
        elif kind == "reprocess":
            self.reprocess(arg)
        else:
            self.batch(arg, dies=kind == "dies")

    def round(self, which: int) -> bool:
        worker = self.workers[which]
        if worker is None:
            self.generation += 1
            owner = Owner.this_process(f"worker {which} generation {self.generation}")
            worker = self.workers[which] = Worker(
                log=self.ws.log, store=self.ws.store, pipelines=[pipeline()], say=lambda _: None, owner=owner,
                config=fl.StreamConfig(batch_interval_ms=0, max_batch_records=7, lease_ms=60_000))
        worker.rebalance()   # the membership now, not a quarter lease later
        full = worker.step()
        worker.rebalance()   # and once more: a partition whose commit was fenced is taken again
        return worker.step() or full

    def leave(self, which: int) -> None:
        worker = self.workers[which]
        if worker is not None:
            worker.close()   # its partitions are free at once; a new worker joins at its next round
            self.workers[which] = None

    def reprocess(self, inner: list[tuple[str, Any]]) -> None:
        """Replay the log into new versions and switch; ``inner`` runs after the first replay
        micro-batch (the workers commit and events arrive during the replay)."""
        flows = FlowSet(self.directory)
        flows.add(pipeline(), self.directory / "flow.py", "lambda", 0.0)
        pending = list(inner)

        def meanwhile(_: dict[str, Any]) -> None:
            while pending:
                self.do(pending.pop(0))

        result = reprocess(self.ws, flows, "counts", max_batch_records=7, progress=meanwhile)
        assert result.switched
        self.reprocesses += 1

    # -- what the store says it covers, and the brute force over it ---------------------
    def covered(self) -> list[int]:
        """Per partition, where the merged view ends: the partition's checkpoint, else the
        batch cut-off (else nothing)."""
        with self.ws.store.transaction() as txn:
            blobs = [txn.get_checkpoint(partition_id(NAME, p)) for p in range(PARTITIONS)]
        views = {v.name for v in self.ws.store.views()}
        cut = self.ws.store.view("counts").cutoff if "counts" in views else None
        base = [int(cut.get(p, 0)) for p in range(PARTITIONS)] if cut else [0] * PARTITIONS
        return [Checkpoint.loads(b).offsets[0] if b is not None else base[p] for p, b in enumerate(blobs)]

    def merged(self) -> dict[Any, Any]:
        views = {v.name for v in self.ws.store.views()}
        return {r.key: r.value for r in self.ws.store.query("counts")} if "counts" in views else {}

    def close(self) -> None:
        self.leave(0)
        self.leave(1)
        self.ws.close()


EXAMPLES = int(os.environ.get("FLUVIAL_HANDOVER_EXAMPLES", "40"))


@pytest.mark.parametrize("kind, examples", [("sqlite", EXAMPLES), ("postgresql", max(1, EXAMPLES // 3))])
def test_batch_runs_beside_workers_never_count_an_event_twice(kind: str, examples: int) -> None:
    if kind == "postgresql":
        postgres_or_skip()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=operations, seed=st.integers(0, 2**32 - 1), batch_first=st.booleans())
    # a worker with no checkpoint yet (it found the log empty) commits from below a cut-off being taken
    @example(ops=[("round", 0), ("append", 10), ("batch", [("round", 1), ("append", 2)])], seed=1, batch_first=False)
    # a Kappa switch while the workers commit past where the replay ends
    @example(ops=[("append", 9), ("round", 0), ("reprocess", [("append", 9), ("round", 0), ("round", 1)]),
                  ("append", 5), ("round", 1)], seed=3, batch_first=False)
    # a partition whose checkpoint only a publish wrote moves again; a worker commits from it meanwhile
    @example(ops=[("append", 9), ("batch", []), ("append", 9), ("batch", [("round", 0)])], seed=2, batch_first=False)
    def check(ops: list[tuple[str, Any]], seed: int, batch_first: bool) -> None:
        handover(kind, ops, seed, batch_first)

    check()


def handover(kind: str, ops: list[tuple[str, Any]], seed: int, batch_first: bool) -> None:
    print(f"store={kind} seed={seed} batch_first={batch_first} ops={ops}")
    with tempfile.TemporaryDirectory() as tmp, store_url_of(kind, Path(tmp)) as url:
        world = World(Path(tmp), random.Random(seed), url)
        try:
            if batch_first:   # the cut-off is taken for a single runner; the workers mark the pipeline meanwhile
                world.append(10)
                world.batch([("append", 3), ("round", 0), ("append", 2)], dies=False)
            for op in ops:
                world.do(op)
                upto = world.covered()
                assert world.merged() == brute(world.log_events(), upto), (op, upto)
            world.leave(1)                                   # the last worker standing catches up
            while world.round(0) or world.covered() != [len(e) for e in world.log_events()]:
                pass
            everything = world.log_events()
            assert world.merged() == brute(everything, [len(events) for events in everything])
        finally:
            world.close()
