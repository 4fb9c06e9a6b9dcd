"""Batch and stream runners on one data dir: batch ⊕ realtime never counts an event twice
(on every store: ``store_url``, SQLite and PostgreSQL).

    log:      |------- first half -------|------- second half -------|
    stream:   |== realtime ==============|                            (checkpoint at the middle)
    batch:    |== version 1 (cut-off = stream checkpoint) ===========|  realtime part dropped
    stream:                              |== realtime ================|
    query:    batch v1 ⊕ realtime  == brute force over everything
"""

from __future__ import annotations

import operator
import random
from collections import Counter

import pytest

import fluvial as fl

SEED = random.randrange(2**32)


def make_events(n, offset=0):
    rng = random.Random(SEED + offset)
    return [fl.Event(device=f"d{rng.randrange(30)}", kind="line", ts=1_000 * (i + offset),
                     seq=i + offset, payload={"text": " ".join(rng.choices("abcdef", k=4))})
            for i in range(n)]


def pipeline():
    p = fl.Pipeline("lambda")
    words = p.from_log("line").flat_map(lambda e: e.payload["text"].split())
    words.map(lambda w: (w, 1)).reduce_by_key(operator.add).to_view("counts")
    (words.map(lambda w: (w, 1)).update_state_by_key(lambda vs, s: (s or 0) + sum(vs))
     .to_view("running"))
    return p


def brute(events):
    return Counter(w for e in events for w in e.payload["text"].split())


def view(ws, name):
    return {r.key: r.value for r in ws.store.query(name)}


@pytest.fixture
def halves():
    print(f"seed={SEED}")
    return make_events(3000), make_events(2500, offset=3000)


def stream(ws):
    return ws.stream_runner(fl.StreamConfig(batch_interval_ms=0, max_batch_records=700)).run(
        pipeline(), until_caught_up=True)


def test_stream_then_batch_then_stream(tmp_path, store_url, halves):
    first, second = halves
    with fl.open(tmp_path, writer=True, store=store_url) as ws:
        ws.log.append(first)
        stream(ws)
        assert view(ws, "counts") == brute(first)
        ws.log.append(second)
        ws.batch_runner().run(pipeline())          # cut-off: the stream checkpoint = end of first
        assert ws.store.view("counts").cutoff == dict(enumerate(
            [sum(1 for e in first if ws.log.partition_for(e.device) == p) for p in range(ws.log.partitions)]))
        assert view(ws, "counts") == brute(first)   # realtime dropped, nothing doubled
        stream(ws)
        assert view(ws, "counts") == brute(first + second)
        assert view(ws, "running") == brute(first + second)


def test_batch_then_fresh_stream_starts_at_the_cut_off(tmp_path, store_url, halves):
    first, second = halves
    with fl.open(tmp_path, writer=True, store=store_url) as ws:
        ws.log.append(first)
        ws.batch_runner().run(pipeline())
        ws.log.append(second)
        stats = stream(ws)
        assert view(ws, "counts") == brute(first + second)
        # per-key state was rebuilt from history, so running totals are totals, not deltas
        assert view(ws, "running") == brute(first + second)
        assert stats.records_in == len(first) + len(second)   # replayed to warm up the state


def test_stateless_pipeline_does_not_replay_history(tmp_path, store_url, halves):
    first, second = halves
    p = fl.Pipeline("stateless")
    p.from_log("line").flat_map(lambda e: e.payload["text"].split()).count_by_value().to_view("c")
    with fl.open(tmp_path, writer=True, store=store_url) as ws:
        ws.log.append(first)
        ws.batch_runner().run(p)
        ws.log.append(second)
        stats = ws.stream_runner(fl.StreamConfig(batch_interval_ms=0)).run(p, until_caught_up=True)
        assert stats.records_in == len(second)
        assert view(ws, "c") == brute(first + second)


def test_batch_over_an_input_behind_the_stream_checkpoint_is_refused(tmp_path, store_url, halves):
    """An old export must not replace a realtime part it does not cover."""
    first, second = halves
    with fl.open(tmp_path, writer=True, store=store_url) as ws:
        ws.log.append(first + second)
        stream(ws)

        class Behind:  # the log as an export taken before `second` arrived
            partitions = ws.log.partitions

            def end_offsets(self):
                return [max(0, o - 100) for o in ws.log.end_offsets()]

            def read(self, *a, **k):
                return ws.log.read(*a, **k)

        before = view(ws, "counts")
        with pytest.raises(fl.ConfigError, match="before its stream checkpoint"):
            ws.batch_runner(log=Behind()).run(pipeline())
        assert view(ws, "counts") == before == brute(first + second)


def test_speed_layer_commits_during_a_batch_run_are_kept(tmp_path, store_url, halves, monkeypatch):
    """The batch run reads its cut-off (the stream checkpoint), then -- while it computes --
    the speed layer commits micro-batches past the cut-off.  Publishing drops only the
    realtime generations the new version covers: the later ones stay, nothing is doubled."""
    first, second = halves
    third = make_events(1500, offset=5500)
    with fl.open(tmp_path, writer=True, store=store_url) as ws:
        ws.log.append(first)
        stream(ws)
        ws.log.append(second)
        runner = ws.batch_runner()
        original = type(runner)._execute

        def execute_while_streaming(self, plan, cutoff):
            stream(ws)                      # commits the second half while the batch computes
            return original(self, plan, cutoff)

        monkeypatch.setattr(type(runner), "_execute", execute_while_streaming)
        runner.run(pipeline())
        monkeypatch.undo()
        assert view(ws, "counts") == brute(first + second)
        assert ws.store.view("counts").cutoff == dict(enumerate(
            [sum(1 for e in first if ws.log.partition_for(e.device) == p) for p in range(ws.log.partitions)]))
        ws.log.append(third)
        stream(ws)
        assert view(ws, "counts") == brute(first + second + third)
        ws.batch_runner().run(pipeline())   # a quiet batch run: covers everything, realtime empty
        assert view(ws, "counts") == brute(first + second + third)
        assert view(ws, "counts") == {r.key: r.value for r in ws.store.query("counts", realtime=False)}
