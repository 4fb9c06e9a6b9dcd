"""The batch cut-off and the speed layer's start are one decision, whatever runs first.

Random interleavings of appends to the log, speed-layer micro-batches (from a
live runner and from a second, stale one: a restarted or zombie runner), and
batch runs -- before, during and after the speed layer's first checkpoint,
again and again; some batch runs compute while the speed layer commits, some
die before they publish.  After every step, the merged view ``batch ⊕
realtime`` must equal a brute force over exactly the part of the log the store
says it covers; at the end, with the speed layer caught up, over the whole log.

    log:      |==========================================|
    batch:    |== version (cut-off) ======|
    speed:                                |== realtime ==|   checkpoint
    merged == Counter(words of log[0 : checkpoint])  (or [0 : cut-off] before it)

On every store (SQLite, PostgreSQL: fewer examples, each in a schema of its own).
"""

from __future__ import annotations

import operator
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fluvial as fl
from fluvial.errors import LeaseLost
from fluvial.state.checkpoint import Checkpoint, checkpoint_id
from handover_world import PARTITIONS, WordsWorld, brute
from stores import postgres_or_skip, store_url_of

# An operation: ("append", n) | ("step", runner) | ("restart", runner) | ("batch", inner) | ("dies", inner)
inner_ops = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 12)),
                               st.tuples(st.just("step"), st.integers(0, 1)),
                               st.tuples(st.just("restart"), st.integers(0, 1))), max_size=4)
operations = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 25)),
                                st.tuples(st.just("step"), st.integers(0, 1)),
                                st.tuples(st.just("restart"), st.integers(0, 1)),
                                st.tuples(st.just("batch"), inner_ops),
                                st.tuples(st.just("dies"), inner_ops)), min_size=1, max_size=14)


def pipeline() -> fl.Pipeline:
    p = fl.Pipeline("handover")
    words = p.from_log("line").flat_map(lambda e: e.payload["text"].split())
    words.map(lambda w: (w, 1)).reduce_by_key(operator.add).to_view("counts")
    (words.map(lambda w: (w, 1)).update_state_by_key(lambda vs, s: (s or 0) + sum(vs))
     .to_view("running"))
    return p


class World(WordsWorld):
    """The log, the store, up to two speed runs and the batch layer, in one process."""

    def __init__(self, directory: Path, rng: random.Random, store_url: str) -> None:
        super().__init__(directory, rng, store_url)
        self.runs: list[Any] = [None, None]

    def pipeline(self) -> fl.Pipeline:
        return pipeline()

    def do(self, op: tuple[str, Any]) -> None:
        kind, arg = op
        if kind == "append":
            self.append(arg)
        elif kind == "step":
            self.step(arg)
        elif kind == "restart":
            self.stop(arg)
        else:
            self.batch(arg, dies=kind == "dies")

    def step(self, which: int) -> int | None:
        if self.runs[which] is None:
            runner = self.ws.stream_runner(fl.StreamConfig(batch_interval_ms=0, max_batch_records=7))
            self.runs[which] = runner.start(pipeline())  # claims the pipeline: the other run is fenced
        try:
            return self.runs[which].step()  # type: ignore[no-any-return]
        except LeaseLost:  # the other run claimed the pipeline since: this one stops, as a fenced runner does
            self.stop(which)
            return 0

    def stop(self, which: int) -> None:
        if self.runs[which] is not None:
            self.runs[which].runner.release()
            self.runs[which] = None

    # -- what the store says it covers, and the brute force over it ---------------------
    def covered(self) -> list[int]:
        """Per partition, where the merged count view ends: the speed layer's checkpoint
        once it holds realtime rows, else the batch cut-off (else nothing)."""
        with self.ws.store.transaction() as txn:
            blob = txn.get_checkpoint(checkpoint_id("handover"))
        cut = self.ws.store.view("counts").cutoff if "counts" in self.views() else None
        base = [int(cut.get(p, 0)) for p in range(PARTITIONS)] if cut else [0] * PARTITIONS
        if blob is None:
            return base
        cp = Checkpoint.loads(blob)
        return base if cp.warmup_until is not None else cp.offsets

    def views(self) -> set[str]:
        return {v.name for v in self.ws.store.views()}

    def merged(self, name: str) -> dict[Any, Any]:
        return {r.key: r.value for r in self.ws.store.query(name)} if name in self.views() else {}


EXAMPLES = int(os.environ.get("FLUVIAL_HANDOVER_EXAMPLES", "40"))


@pytest.mark.parametrize("kind, examples", [("sqlite", EXAMPLES), ("postgresql", max(1, EXAMPLES // 3))])
def test_batch_runs_at_any_moment_never_count_an_event_twice(kind: str, examples: int) -> None:
    if kind == "postgresql":
        postgres_or_skip()

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=operations, seed=st.integers(0, 2**32 - 1))
    def check(ops: list[tuple[str, Any]], seed: int) -> None:
        handover(kind, ops, seed)

    check()


def handover(kind: str, ops: list[tuple[str, Any]], seed: int) -> None:
    print(f"store={kind} seed={seed} ops={ops}")
    with tempfile.TemporaryDirectory() as tmp, store_url_of(kind, Path(tmp)) as url:
        world = World(Path(tmp), random.Random(seed), url)
        try:
            for op in ops:
                world.do(op)
                upto = world.covered()
                assert world.merged("counts") == brute(world.log_events(), upto), (op, upto)
            world.stop(1)                                   # the last runner standing catches up
            while world.step(0) is not None:
                pass
            everything = world.log_events()
            want = brute(everything, [len(events) for events in everything])
            assert world.merged("counts") == want
            assert world.merged("running") == want           # per-key state: totals, not deltas
        finally:
            world.stop(0)
            world.stop(1)
            world.ws.close()
