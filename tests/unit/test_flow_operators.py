"""Each Flow operator on the local runners, checked against plain Python.

Data comes from a seeded generator (the seed is printed); stream runs use the
queue source so that every batch is a micro-batch.
"""

from __future__ import annotations

import io
import operator
import random
from collections import Counter, defaultdict

import pytest

import fluvial as fl
from fluvial.engine.stream import StreamRunner
from fluvial.serving import SqliteStore

SEED = random.randrange(2**32)


@pytest.fixture
def rng():
    print(f"seed={SEED}")
    return random.Random(SEED)


def batches(rng, n_batches=6, size=40, vocab="abcdefg"):
    return [[rng.choice(vocab) for _ in range(rng.randrange(size))] for _ in range(n_batches)]


def stream_collect(flow, tmp_path, name="t"):
    """Run a flow on the stream runner; return every element of every micro-batch."""
    seen = []
    flow.foreach(seen.append)
    StreamRunner(store=SqliteStore(tmp_path / f"{name}.db"), batch_interval_ms=0).run(
        flow.pipeline, until_caught_up=True)
    return seen


def test_narrow_operators_match_plain_python(rng):
    data = batches(rng)
    flat = [x for b in data for x in b]
    p = fl.Pipeline("narrow")
    src = p.from_queue(data)
    assert src.map(str.upper).collect() == [x.upper() for x in flat]
    assert src.filter(lambda x: x in "abc").collect() == [x for x in flat if x in "abc"]
    assert src.flat_map(lambda x: [x, x]).collect() == [y for x in flat for y in (x, x)]
    assert src.key_by(ord).collect() == [(ord(x), x) for x in flat]
    assert sorted(src.union(src.map(str.upper)).collect()) == sorted(flat + [x.upper() for x in flat])
    sizes = src.map_partitions(lambda it: [sum(1 for _ in it)]).collect()
    assert sum(sizes) == len(flat)


def test_keyed_aggregations_match_counter(rng):
    data = batches(rng)
    flat = [x for b in data for x in b]
    p = fl.Pipeline("agg")
    pairs = p.from_queue(data).map(lambda x: (x, 1))
    assert dict(pairs.reduce_by_key(operator.add).collect()) == Counter(flat)
    assert dict(p.from_queue(data).count_by_value().collect()) == Counter(flat)
    assert dict(pairs.aggregate_by_key(fl.Count()).collect()) == Counter(flat)
    assert p.from_queue(data).aggregate(fl.Count()).collect() == [(None, len(flat))]


def test_windowed_aggregation_matches_brute_force(rng):
    data = batches(rng, n_batches=12)
    shape = fl.Sliding(length_ms=3000, slide_ms=1000)
    p = fl.Pipeline("win")
    rows = p.from_queue(data).map(lambda x: (x, 1)).window(shape).reduce_by_key(operator.add).collect()
    expected: dict = defaultdict(int)
    for i, b in enumerate(data):
        for x in b:
            for w in shape.windows_of(i * 1000):
                expected[(x, w)] += 1
    assert {(r.key, r.window): r.value for r in rows} == dict(expected)


def test_top_n_per_window_orders_by_value_then_key(rng):
    data = batches(rng, n_batches=5, size=60)
    p = fl.Pipeline("top")
    rows = (p.from_queue(data).map(lambda x: (x, 1))
            .reduce_by_key_and_window(operator.add, 2000, 1000, inv=operator.sub).top(3).collect())
    shape = fl.Sliding(length_ms=2000, slide_ms=1000)
    per_window: dict = defaultdict(Counter)
    for i, b in enumerate(data):
        for w in shape.windows_of(i * 1000):
            per_window[w].update(b)
    expected = {w: [[k, n] for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
                for w, c in per_window.items() if c}
    assert {r.window: r.value for r in rows} == expected


def test_map_with_state_running_totals_on_stream(rng, tmp_path):
    data = batches(rng)
    p = fl.Pipeline("state")

    def running(key, value, total):
        total = (total or 0) + value
        return total, (key, total)

    out = stream_collect(p.from_queue(data).map(lambda x: (x, 1)).map_with_state(running), tmp_path)
    totals: Counter = Counter()
    expected = []
    for b in data:
        for x in b:
            totals[x] += 1
            expected.append((x, totals[x]))
    assert out == expected


def test_update_state_by_key_gives_final_totals_on_both_runners(rng, tmp_path):
    data = batches(rng)
    flat = Counter(x for b in data for x in b)

    def build():
        p = fl.Pipeline("upd")
        (p.from_queue(data).map(lambda x: (x, 1))
         .update_state_by_key(lambda values, s: (s or 0) + sum(values)).to_view("totals"))
        return p

    store = SqliteStore(tmp_path / "v.db")
    fl.BatchRunner(store=store).run(build())
    assert {r.key: r.value for r in store.query("totals")} == flat
    store2 = SqliteStore(tmp_path / "s.db")
    StreamRunner(store=store2, batch_interval_ms=0).run(build(), until_caught_up=True)
    assert {r.key: r.value for r in store2.query("totals")} == flat


def test_join_and_lookup_match_brute_force(rng, tmp_path):
    left = [[(rng.choice("abc"), rng.randrange(9)) for _ in range(8)] for _ in range(4)]
    right = [[(rng.choice("abcd"), rng.randrange(9)) for _ in range(5)] for _ in range(4)]
    expected = Counter((k, (v, w)) for lb in left for k, v in lb for rb in right for k2, w in rb if k == k2)
    p = fl.Pipeline("join")
    joined = p.from_queue(left).join(p.from_queue(right))
    assert Counter(joined.collect()) == expected
    p2 = fl.Pipeline("join")
    streamed = stream_collect(p2.from_queue(left).join(p2.from_queue(right)), tmp_path)
    assert Counter(streamed) == expected
    ref = {"a": "A", "b": "B"}
    got = p.from_queue(left).lookup(ref).collect()
    assert got == [(k, (v, ref[k])) for b in left for k, v in b if k in ref]


def test_print_shows_batch_time_and_first_n(tmp_path):
    p = fl.Pipeline("print")
    p.from_queue([["x y x"], ["z"]], start_ms=1452128900000).flat_map(str.split).map(
        lambda w: (w, 1)).window(fl.Tumbling(length_ms=1000)).reduce_by_key(operator.add).map(
        lambda r: (r.key, r.value)).print(1)
    out = io.StringIO()
    StreamRunner(store=SqliteStore(tmp_path / "p.db"), batch_interval_ms=0, out=out).run(
        p, until_caught_up=True)
    assert out.getvalue().split("\n") == [
        "-------------------------------------------", "Time: 1452128900000 ms",
        "-------------------------------------------", "(x,2)", "...", "",
        "-------------------------------------------", "Time: 1452128901000 ms",
        "-------------------------------------------", "(z,1)", "", ""]


def test_errors_name_the_operator_and_the_fix():
    p = fl.Pipeline("err")
    with pytest.raises(fl.FlowError, match=r"aggregate at test_flow_operators.py:\d+: expects \(key, value\) pairs"):
        p.from_queue([["abc"]]).reduce_by_key(operator.add).collect()
    with pytest.raises(fl.FlowError, match=r"map at .*the user function failed \(ZeroDivisionError"):
        p.from_queue([[1]]).map(lambda x: x / 0).collect()
    with pytest.raises(fl.FlowError, match="keys must be hashable"):
        p.from_queue([[1]]).map(lambda x: ([x], 1)).reduce_by_key(operator.add).collect()
    with pytest.raises(fl.ConfigError, match="has no sink"):
        fl.BatchRunner().run(fl.Pipeline("empty"))
    q = fl.Pipeline("dup")
    t = q.from_queue([[("a", 1)]]).reduce_by_key(operator.add)
    t.to_view("v")
    t.to_view("v")
    with pytest.raises(fl.ConfigError, match="two sinks write view 'v'"):
        fl.BatchRunner().run(q)
    with pytest.raises(fl.ConfigError, match="reads the log"):
        fl.Pipeline("log").from_log("x").collect()
    with pytest.raises(fl.ConfigError, match="slide_ms"):
        fl.Sliding(length_ms=1000, slide_ms=2000)


def test_explain_draws_stages_like_to_debug_string():
    p = fl.Pipeline("wc")
    counts = p.text_file("words.txt").flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add)
    lines = counts.explain().splitlines()
    assert lines[0].startswith("ShuffledFlow[") and "reduce_by_key" in lines[0]
    assert lines[1].startswith("+-MappedFlow[") and "at map at test_flow_operators.py:" in lines[1]
    assert lines[2].startswith("   |  MappedFlow[") and "flat_map" in lines[2]
    assert lines[3].startswith("   |  TextFile[") and "words.txt" in lines[3]


def test_windowed_state_is_evicted_behind_the_watermark(tmp_path):
    """Panes of windows that closed (watermark passed their end) leave the state."""
    p = fl.Pipeline("evict")
    batches = [[f"w{i}"] * 3 for i in range(50)]          # batch i at event time i * 1000
    (p.from_queue(batches).map(lambda w: (w, 1)).window(fl.Tumbling(length_ms=1000))
     .reduce_by_key(operator.add).foreach(lambda row: None))
    from fluvial.engine.execute import Executor
    from fluvial.engine.plan import compile_plan
    from fluvial.engine.sources import memory_chunks
    from fluvial.state.operators import ExecState

    plan = compile_plan(p)
    ex = Executor(plan, stream=True, state=ExecState())
    source = plan.sources[0]
    for i in range(50):
        chunks, _, t = memory_chunks(plan, source, i, 1)
        ex.run({source.id: chunks}, batch_time_ms=t)
    agg_pos = next(plan.index[n.id] for n in plan.nodes if n.op == "aggregate")
    # Only the newest window (not yet closed) is still held.
    assert list(ex.state.tables[agg_pos]) == ["w49"]


def test_latest_value_view_of_windowed_rows(tmp_path):
    """A map after a windowed aggregation keeps the window; the view serves it."""
    p = fl.Pipeline("labels")
    (p.from_queue([["a", "a", "b"], ["a"], [], ["b"]]).map(lambda w: (w, 1))
     .window(fl.Tumbling(length_ms=2000)).aggregate_by_key(fl.Count())
     .map(lambda r: fl.Windowed(r.key, r.window, f"n={r.value}")).to_view("labels"))
    store = SqliteStore(tmp_path / "v.db")
    fl.BatchRunner(store=store).run(p)
    expected = [("a", (0, 2000), "n=3"), ("b", (0, 2000), "n=1"), ("b", (2000, 4000), "n=1")]
    assert [(r.key, r.window, r.value) for r in store.query("labels")] == expected
    stream_store = SqliteStore(tmp_path / "s.db")
    StreamRunner(store=stream_store, batch_interval_ms=0).run(p, until_caught_up=True)
    assert [(r.key, r.window, r.value) for r in stream_store.query("labels")] == expected
