"""The view stores: merged queries vs brute force, transactions, versions, readers.

The tests taking the ``store`` fixture run on every store (SQLite and PostgreSQL:
``store_url`` in tests/conftest.py); the others are about the SQLite file itself."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from fluvial.aggregators.base import Aggregator
from fluvial.backends import open_store
from fluvial.errors import ConfigError, StoreError, ViewNotFound
from fluvial.serving import Row, SqliteStore
from fluvial.windows.shapes import Session, Sliding, Tumbling


class Count(Aggregator[Any, int, int]):
    name = "test_count"
    has_subtract = True

    def zero(self) -> int:
        return 0

    def add(self, acc: int, value: Any) -> int:
        return acc + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def subtract(self, a: int, b: int) -> int:
        return a - b


class DictCount(Aggregator[Any, dict, dict]):
    """Counts per value; no inverse (exercises the non-incremental composition)."""

    name = "test_dict_count"

    def zero(self) -> dict:
        return {}

    def add(self, acc: dict, value: Any) -> dict:
        out = dict(acc)
        out[value] = out.get(value, 0) + 1
        return out

    def merge(self, a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + v
        return out

    def result(self, acc: dict) -> dict:
        return {str(k): v for k, v in sorted(acc.items())}


class Exploding(Count):
    name = "test_exploding"

    def merge(self, a: int, b: int) -> int:
        raise ValueError("boom")


AGGS = [Count(), DictCount()]


@pytest.fixture
def store(store_url):
    with open_store(store_url) as s:
        yield s


def rng(request) -> random.Random:
    seed = int(os.environ.get("FLUVIAL_SEED", random.randrange(2**32)))
    print(f"{request.node.name}: seed={seed} (rerun with FLUVIAL_SEED={seed})")
    return random.Random(seed)


def random_events(r: random.Random, n: int) -> list[tuple[Any, int, int]]:
    keys: list[Any] = ["a", "b", "ü", 1, 2, None, ("x", 1), ("x", 2), True, 1.5, "10", 10]
    return [(r.choice(keys), r.randrange(0, 20_000), r.randrange(3)) for _ in range(n)]


def jkey(key: Any) -> Any:
    """The key as a query returns it (tuples as lists)."""
    return msgspec.json.decode(msgspec.json.encode(key))


def canonical(key: Any) -> bytes:
    return msgspec.json.encode(key)


def storage_rows(agg, shape, events) -> list[tuple[Any, Any, Any]]:
    """Accumulate events per (key, storage window), as a runner would write them."""
    accs: dict[tuple[bytes, Any], Any] = {}
    originals: dict[bytes, Any] = {}
    for key, ts, value in events:
        window = shape.storage_window(ts) if shape is not None else None
        k = (canonical(key), window)
        originals[canonical(key)] = key
        accs[k] = agg.add(accs.get(k, agg.zero()), value)
    return [(originals[k], w, acc) for (k, w), acc in accs.items()]


def brute_force(agg, shape, events, from_ms=None, to_ms=None) -> list[Row]:
    """Reference: assign every event to each of its windows (``windows_of``)."""
    accs: dict[tuple[bytes, Any], Any] = {}
    originals: dict[bytes, Any] = {}
    for key, ts, value in events:
        windows = shape.windows_of(ts) if shape is not None else [None]
        originals[canonical(key)] = key
        for w in windows:
            if w is not None and ((from_ms is not None and w[0] < from_ms)
                                  or (to_ms is not None and w[0] >= to_ms)):
                continue
            k = (canonical(key), w)
            accs[k] = agg.add(accs.get(k, agg.zero()), value)
    out = sorted(accs.items(), key=lambda item: (item[0][0], item[0][1] or (0, 0)))
    return [Row(key=jkey(originals[k]), window=w, value=agg.result(acc)) for (k, w), acc in out]


def brute_force_sessions(agg, gap_ms, events) -> list[Row]:
    per_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    originals = {}
    for key, ts, value in events:
        per_key[canonical(key)].append((ts, value))
        originals[canonical(key)] = key
    out = []
    for k in sorted(per_key):
        session: list[tuple[int, int]] = []
        for ts, value in [*sorted(per_key[k]), (None, None)]:  # type: ignore[list-item]
            if session and (ts is None or ts - session[-1][0] >= gap_ms):
                acc = agg.add_many(agg.zero(), [v for _, v in session])
                out.append(Row(key=jkey(originals[k]), window=(session[0][0], session[-1][0] + gap_ms),
                               value=agg.result(acc)))
                session = []
            if ts is not None:
                session.append((ts, value))
    return out


def session_fragments(agg, gap_ms, events) -> list[tuple[Any, Any, Any]]:
    """Sessions of a subset of the events: what a runner stores for that subset."""
    rows = []
    for row in brute_force_sessions(agg, gap_ms, events):
        members = [(k, ts, v) for k, ts, v in events
                   if jkey(k) == row.key and row.window[0] <= ts < row.window[1] - gap_ms + 1]
        acc = agg.add_many(agg.zero(), [v for _, _, v in members])
        rows.append((members[0][0], row.window, acc))
    return rows


SHAPES = [None, Tumbling(length_ms=1_000), Tumbling(length_ms=700, offset_ms=300),
          Sliding(length_ms=3_000, slide_ms=1_000), Sliding(length_ms=2_500, slide_ms=1_000, offset_ms=100)]


@pytest.mark.parametrize("agg", AGGS, ids=lambda a: a.name)
@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_batch_plus_realtime_equals_brute_force(store, request, agg, shape):
    r = rng(request)
    events = random_events(r, 600)
    cut = r.randrange(len(events))
    batch, realtime = events[:cut], events[cut:]
    store.define_view("v", aggregator=agg, window=shape)
    version = store.begin_version("v")
    with store.transaction() as txn:
        half = len(batch) // 2  # two writes into the same version: merged, not replaced
        txn.merge_rows("v", storage_rows(agg, shape, batch[:half]), part=version)
        txn.merge_rows("v", storage_rows(agg, shape, batch[half:]), part=version)
    store.publish_version("v", version, {0: cut})
    with store.transaction() as txn:
        txn.merge_rows("v", storage_rows(agg, shape, realtime))
    assert store.query("v") == brute_force(agg, shape, events)
    assert store.query("v", realtime=False) == brute_force(agg, shape, batch)
    for key in [None, ("x", 1), "a", 10, "missing"]:
        expected = [row for row in brute_force(agg, shape, events) if row.key == jkey(key)
                    and canonical(row.key) == canonical(jkey(key))]
        assert store.query("v", key=key) == expected
    if shape is not None:
        lo, hi = sorted(r.sample(range(-3_000, 23_000), 2))
        assert store.query("v", from_ms=lo, to_ms=hi) == brute_force(agg, shape, events, lo, hi)
        assert store.query("v", from_ms=lo) == brute_force(agg, shape, events, lo, None)
        assert store.query("v", to_ms=hi, key="a") == [
            row for row in brute_force(agg, shape, events, None, hi) if row.key == "a"]


@pytest.mark.parametrize("agg", AGGS, ids=lambda a: a.name)
def test_sessions_across_parts_equal_brute_force(store, request, agg):
    r = rng(request)
    gap = 500
    events = [(r.choice(["a", "b", ("c", 1)]), r.randrange(0, 30_000), r.randrange(3))
              for _ in range(300)]
    store.define_view("s", aggregator=agg, window=Session(gap_ms=gap))
    version = store.begin_version("s")
    split = r.randrange(len(events))
    with store.transaction() as txn:
        txn.merge_rows("s", session_fragments(agg, gap, events[:split]), part=version)
    store.publish_version("s", version, {0: split})
    with store.transaction() as txn:
        txn.merge_rows("s", session_fragments(agg, gap, events[split:]))
    assert store.query("s") == brute_force_sessions(agg, gap, events)
    expected = [row for row in brute_force_sessions(agg, gap, events) if 5_000 <= row.window[0] < 9_000]
    assert store.query("s", from_ms=5_000, to_ms=9_000) == expected


def test_keys_are_canonical_and_json_friendly(store):
    store.define_view("k", aggregator=Count())
    keys = ["a", 1, 1.0, True, None, ("a", 1), ["a", 1], ("a", (None, 2.5))]
    with store.transaction() as txn:
        txn.merge_rows("k", [(k, None, 1) for k in keys])
    rows = store.query("k")
    # 1, 1.0 and True are distinct; ("a", 1) and ["a", 1] are the same key.
    assert sorted((msgspec.json.encode(r.key), r.value) for r in rows) == sorted(
        [(b'"a"', 1), (b"1", 1), (b"1.0", 1), (b"true", 1), (b"null", 1), (b'["a",1]', 2),
         (b'["a",[null,2.5]]', 1)])
    assert [msgspec.json.encode(r.key) for r in rows] == sorted(msgspec.json.encode(r.key) for r in rows)
    assert store.query("k", key=("a", 1)) == [Row(key=["a", 1], window=None, value=2)]
    assert store.query("k", key=None) == [Row(key=None, window=None, value=1)]
    assert msgspec.json.decode(msgspec.json.encode(rows[0])) == {
        "key": rows[0].key, "window": None, "value": rows[0].value}
    with pytest.raises(ConfigError, match="finite"), store.transaction() as txn:
        txn.merge_rows("k", [(float("nan"), None, 1)])
    with pytest.raises(ConfigError, match="keys must be"), store.transaction() as txn:
        txn.merge_rows("k", [({"a": 1}, None, 1)])


def test_rows_merging_to_zero_are_deleted(store):
    store.define_view("z", aggregator=Count(), window=Tumbling(length_ms=10))
    with store.transaction() as txn:
        txn.merge_rows("z", [("a", (0, 10), 2), ("b", (0, 10), 1), ("c", (0, 10), 0)])
        txn.merge_rows("z", [("a", (0, 10), -2), ("a", (0, 10), 5), ("b", (0, 10), -1)])
    assert store.query("z") == [Row(key="a", window=(0, 10), value=5)]
    with store.transaction() as txn:
        txn.merge_rows("z", [("a", (0, 10), -5)])
    assert store.query("z") == []


def test_window_rows_are_checked_against_the_view(store):
    store.define_view("t", aggregator=Count(), window=Tumbling(length_ms=1_000))
    store.define_view("n", aggregator=Count())
    bad = [("t", ("a", (0, 500), 1), "not a storage pane"), ("t", ("a", None, 1), "window None"),
           ("t", ("a", (500, 1_500), 1), "not a storage pane"), ("n", ("a", (0, 10), 1), "no window")]
    for view, row, message in bad:
        with pytest.raises(ConfigError, match=message), store.transaction() as txn:
            txn.merge_rows(view, [row])
    assert store.query("t") == [] and store.query("n") == []


def test_failed_transaction_leaves_nothing(store):
    store.define_view("v", aggregator=Count())
    with store.transaction() as txn:
        txn.merge_rows("v", [("a", None, 1)])
        txn.set_checkpoint("speed", b"one")
    with pytest.raises(RuntimeError, match="crash"), store.transaction() as txn:
        txn.merge_rows("v", [("a", None, 10), ("b", None, 1)])
        txn.set_checkpoint("speed", b"two")
        txn.set_checkpoint("other", b"x")
        txn.add_late_events("v", 3)
        txn.save_rows("out", ["k", "v"], [("a", 1)])
        assert txn.get_checkpoint("speed") == b"two"
        raise RuntimeError("crash")
    assert store.query("v") == [Row(key="a", window=None, value=1)]
    assert store.view("v").late_events == 0
    assert "out" not in store.tables()
    with store.transaction() as txn:
        assert txn.get_checkpoint("speed") == b"one"
        assert txn.get_checkpoint("other") is None
        txn.add_late_events("v", 2)
    assert store.view("v").late_events == 2
    with pytest.raises(StoreError, match="transaction has ended"):
        txn.merge_rows("v", [])


def test_aggregator_failure_inside_sqlite_is_reported_and_rolled_back(store):
    store.define_view("e", aggregator=Exploding())
    with store.transaction() as txn:
        txn.merge_rows("e", [("a", None, 1)])
    with pytest.raises(StoreError, match="boom"), store.transaction() as txn:
        txn.merge_rows("e", [("b", None, 1), ("a", None, 1)])
    assert store.query("e") == [Row(key="a", window=None, value=1)]


def test_put_rows_overwrite_and_delete_part(store):
    store.define_view("latest", aggregator=Count())
    with store.transaction() as txn:
        txn.put_rows("latest", [("a", None, 3), ("b", None, 4)])
        txn.put_rows("latest", [("a", None, 7)])
    assert [(r.key, r.value) for r in store.query("latest")] == [("a", 7), ("b", 4)]
    with store.transaction() as txn:
        assert txn.delete_part("latest", "realtime") == 2
    assert store.query("latest") == []


def fill_version(store, view, value, n_keys):
    version = store.begin_version(view)
    with store.transaction() as txn:
        txn.merge_rows(view, [(f"k{i:04d}", None, value) for i in range(n_keys)], part=version)
    return version


def test_versions_publish_rollback_drop(store):
    store.define_view("v", aggregator=Count())
    assert store.view("v").alias_version is None and store.query("v") == []
    v1 = fill_version(store, "v", 1, 3)
    assert store.query("v") == []  # not published yet
    assert [r.value for r in store.query("v", version=v1)] == [1, 1, 1]
    store.publish_version("v", v1, {0: 10})
    v2 = fill_version(store, "v", 2, 3)
    store.publish_version("v", v2, {0: 20, 1: 5})
    info = store.view("v")
    assert (info.alias_version, info.previous_version, info.versions) == (v2, v1, [v1, v2])
    assert info.cutoff == {0: 20, 1: 5} and info.cutoffs[v1] == {0: 10}
    v3 = fill_version(store, "v", 3, 2)
    store.publish_version("v", v3, {0: 30})
    info = store.view("v")
    assert (info.alias_version, info.previous_version, info.versions) == (v3, v2, [v2, v3])
    assert [r.value for r in store.query("v")] == [3, 3]
    with store.transaction() as txn:
        txn.merge_rows("v", [("k0000", None, 10)])
    assert [r.value for r in store.query("v")] == [13, 3]
    assert store.rollback("v") == v2
    assert [r.value for r in store.query("v")] == [12, 2, 2]
    assert store.view("v").previous_version is None
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("v")
    with pytest.raises(StoreError, match="current version"):
        store.drop_version("v", v2)
    store.drop_version("v", v3)
    assert store.view("v").versions == [v2]
    with pytest.raises(ConfigError, match="no version 3"):
        store.query("v", version=v3)
    assert store.begin_version("v") == 4  # numbers are never reused


def _reader(path: str, n_keys: int, stop_at: float, out: Any) -> None:
    seen: set[int] = set()
    bad: list[str] = []
    queries = 0
    with SqliteStore(path) as store:
        while time.monotonic() < stop_at:
            rows = store.query("v")
            queries += 1
            values = {row.value for row in rows}
            if rows and (len(rows) != n_keys or len(values) != 1):
                bad.append(f"mixed snapshot: {len(rows)} rows, values {sorted(values)[:5]}")
            seen |= values
    out.put((sorted(seen), bad[:3], queries))


def test_concurrent_reader_sees_only_complete_versions(tmp_path):
    path = str(tmp_path / "views.db")
    n_keys = 2_000
    with SqliteStore(path) as store:
        store.define_view("v", aggregator=Count())
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        reader = ctx.Process(target=_reader, args=(path, n_keys, time.monotonic() + 6.0, out))
        reader.start()
        time.sleep(1.0)  # let the reader start querying the empty view
        published = []
        deadline = time.monotonic() + 4.0
        value = 0
        while time.monotonic() < deadline:
            value += 1
            version = store.begin_version("v")
            for chunk in range(4):  # a version written in several transactions
                with store.transaction() as txn:
                    txn.merge_rows("v", [(f"k{i:05d}", None, value) for i in range(chunk, n_keys, 4)],
                                   part=version)
            store.publish_version("v", version, {0: value})
            published.append(value)
        seen, bad, queries = out.get(timeout=60)
        reader.join(timeout=60)
    assert reader.exitcode == 0
    assert bad == []
    assert queries > 5 and len(published) > 3
    assert set(seen) <= set(published) and len(seen) >= 2


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "v;drop", "é", None, "a/b"])
def test_invalid_view_names_are_refused(store, name):
    with pytest.raises(ConfigError, match="invalid view name"):
        store.define_view(name, aggregator=Count())


def test_view_not_found_lists_views_and_hints(store):
    store.define_view("temps", aggregator=Count())
    store.define_view("hits.by_device", aggregator=Count())
    with pytest.raises(ViewNotFound) as info:
        store.query("temp")
    message = str(info.value)
    assert "'temp'" in message and "['hits.by_device', 'temps']" in message
    assert "define_view" in message and "to_view" in message
    with pytest.raises(ViewNotFound), store.transaction() as txn:
        txn.merge_rows("nope", [])
    with pytest.raises(ConfigError, match="invalid view name"):
        store.view("no such")


def test_redefining_a_view(store):
    info = store.define_view("w", aggregator=Count(), window=Tumbling(length_ms=1_000))
    assert info.window == {"kind": "tumbling", "length_ms": 1_000, "offset_ms": 0}
    assert info.aggregator == {"name": "test_count"}
    store.define_view("w", aggregator=Count(), window=Tumbling(length_ms=1_000))  # same: fine
    with pytest.raises(ConfigError, match="cannot change"):
        store.define_view("w", aggregator=Count(), window=Tumbling(length_ms=2_000))
    with pytest.raises(ConfigError, match="cannot change"):
        store.define_view("w", aggregator=Count())
    with pytest.raises(ConfigError, match="cannot be merged"):
        store.define_view("w", aggregator=DictCount(), window=Tumbling(length_ms=1_000))
    assert [v.name for v in store.views()] == ["w"]


def test_aggregator_with_lambdas_survives_reopening(tmp_path):
    class Fn(Aggregator):
        name = "fn"

        def __init__(self, f):
            self.f = f

        def zero(self):
            return 0

        def merge(self, a, b):
            return self.f(a, b)

    path = tmp_path / "v.db"
    with SqliteStore(path) as store:
        store.define_view("m", aggregator=Fn(max))
        with store.transaction() as txn:
            txn.merge_rows("m", [("a", None, 3)])
    with SqliteStore(path, synchronous="FULL") as store:
        with store.transaction() as txn:
            txn.merge_rows("m", [("a", None, 2), ("a", None, 5)])
        assert store.query("m") == [Row(key="a", window=None, value=5)]


def test_save_rows_upserts_into_user_tables(store):
    with store.transaction() as txn:
        txn.save_rows("device_stats", ["device", "day", "n", "extra"],
                      [("d1", 1, 3, {"a": [1, 2]}), ("d2", 1, 4, None), ("d1", 2, 1, "x")], key_columns=2)
        txn.save_rows("device_stats", ["device", "day", "n", "extra"],
                      [{"device": "d1", "day": 1, "n": 9, "extra": 1.5}], key_columns=2)
    assert store.table_rows("device_stats") == [
        {"device": "d1", "day": 1, "n": 9, "extra": 1.5},
        {"device": "d1", "day": 2, "n": 1, "extra": "x"},
        {"device": "d2", "day": 1, "n": 4, "extra": None}]
    assert store.tables() == ["device_stats"]
    with store.transaction() as txn:
        txn.save_rows("device_stats", ["device", "day", "n", "extra"], [("d3", 0, [1], (2, "b"))],
                      key_columns=2)
    assert store.table_rows("device_stats")[-1] == {"device": "d3", "day": 0, "n": "[1]", "extra": '[2,"b"]'}
    bad = [(("bad table", ["a"]), "invalid table name"), (("fluvial_rows", ["a"]), "reserved"),
           (("t", ["a b"]), "invalid column name"), (("t", ["a", "A"]), "duplicate"),
           (("t", ['a"; drop'],), "invalid column name"),
           (("device_stats", ["device", "n"]), "exists with columns")]
    for args, message in bad:
        with pytest.raises(ConfigError, match=message), store.transaction() as txn:
            txn.save_rows(*args, [])
    with pytest.raises(ConfigError, match="has 1 values"), store.transaction() as txn:
        txn.save_rows("t", ["a", "b"], [("x",)])
    with pytest.raises(StoreError, match="no table"):
        store.table_rows("missing")


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="synchronous"):
        SqliteStore(tmp_path / "x.db", synchronous="OFF")
    with SqliteStore(tmp_path / "x.db") as store:
        store.define_view("v", aggregator=Count())
        with pytest.raises(ConfigError, match="part must be"), store.transaction() as txn:
            txn.merge_rows("v", [], part="batch")
        with pytest.raises(ConfigError, match="no window"):
            store.query("v", from_ms=0)
        with store.transaction(), pytest.raises(StoreError, match="transaction open"):
            store.begin_version("v")


def _crash_mid_transaction(path: str) -> None:
    with SqliteStore(path) as store, store.transaction() as txn:
        txn.merge_rows("v", [("a", None, 100), ("b", None, 1)])
        txn.set_checkpoint("speed", b"after-crash")
        os._exit(1)  # the process dies: no commit, no rollback, no cleanup


def test_process_killed_mid_transaction_leaves_nothing(tmp_path):
    path = str(tmp_path / "views.db")
    with SqliteStore(path) as store:
        store.define_view("v", aggregator=Count())
        with store.transaction() as txn:
            txn.merge_rows("v", [("a", None, 1)])
            txn.set_checkpoint("speed", b"before")
    process = multiprocessing.get_context("spawn").Process(target=_crash_mid_transaction, args=(path,))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 1
    with SqliteStore(path) as store:
        assert store.query("v") == [Row(key="a", window=None, value=1)]
        with store.transaction() as txn:  # the dead writer's lock is gone
            assert txn.get_checkpoint("speed") == b"before"


def test_publish_drops_only_the_sealed_realtime_generations(tmp_path):
    from fluvial.aggregators import Count

    with SqliteStore(tmp_path / "v.db") as store:
        store.define_view("hits", aggregator=Count())
        with store.transaction() as txn:
            txn.merge_rows("hits", [("a", None, 5), ("b", None, 1)])
        with store.transaction() as txn:
            sealed = txn.seal_realtime("hits")
        with store.transaction() as txn:   # committed after the seal: a newer generation
            txn.merge_rows("hits", [("a", None, 3)])
        assert {r.key: r.value for r in store.query("hits")} == {"a": 8, "b": 1}
        version = store.begin_version("hits")
        with store.transaction() as txn:
            txn.merge_rows("hits", [("a", None, 5), ("b", None, 1)], part=version)
        store.publish_version("hits", version, {0: 6}, drop_realtime=True, realtime_through=sealed)
        assert {r.key: r.value for r in store.query("hits")} == {"a": 8, "b": 1}
        assert {r.key: r.value for r in store.query("hits", realtime=False)} == {"a": 5, "b": 1}
        store.publish_version("hits", version, {0: 6}, drop_realtime=True)   # all generations
        assert {r.key: r.value for r in store.query("hits")} == {"a": 5, "b": 1}


def test_a_schema_1_store_is_migrated(tmp_path):
    import sqlite3

    from fluvial.aggregators import Count
    from fluvial.serving.sqlite.schema import TABLES

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in TABLES:
        conn.execute(statement.replace(",\n        rt_gen INTEGER NOT NULL DEFAULT 0", "")
                     .replace("aggregator BLOB,\n        agg_spec TEXT,\n        window_spec TEXT,\n        PRIMARY",
                              "PRIMARY"))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with SqliteStore(path) as store:
        store.define_view("hits", aggregator=Count())
        with store.transaction() as txn:
            txn.merge_rows("hits", [("a", None, 2)])
        assert [(r.key, r.value) for r in store.query("hits")] == [("a", 2)]


def test_a_version_with_its_own_aggregator_and_window(tmp_path):
    """Reprocessing with changed code: the new version is written and read with its own
    aggregator and window; publishing makes them the view's; rolling back restores the old."""
    from fluvial.aggregators import Max, Sum
    from fluvial.windows.shapes import Tumbling

    with SqliteStore(tmp_path / "v.db") as store:
        store.define_view("v", aggregator=Sum(), window=Tumbling(length_ms=10))
        v1 = store.begin_version("v")
        total = Sum()
        with store.transaction() as txn:
            txn.merge_rows("v", [("a", (0, 10), total.add(total.zero(), 3)),
                                 ("a", (0, 10), total.add(total.zero(), 4))], part=v1)
        store.publish_version("v", v1, {0: 2})
        v2 = store.begin_version("v", aggregator=Max(), window=Tumbling(length_ms=20))
        m = Max()
        with store.transaction() as txn:
            txn.merge_rows("v", [("a", (0, 20), m.add(m.zero(), 3)), ("a", (0, 20), m.add(m.zero(), 4))], part=v2)
        assert [(r.window, r.value) for r in store.query("v")] == [((0, 10), 7)]          # still v1
        assert [(r.window, r.value) for r in store.query("v", version=v2, realtime=False)] == [((0, 20), 4)]
        store.publish_version("v", v2, {0: 2}, drop_realtime=True)
        assert store.view("v").aggregator == Max().spec()
        with store.transaction() as txn:       # the realtime part now follows v2's code
            txn.merge_rows("v", [("a", (0, 20), m.add(m.zero(), 9))])
        assert [(r.window, r.value) for r in store.query("v")] == [((0, 20), 9)]
        store.publish_version("v", v1, {0: 2}, drop_realtime=True)                          # roll back
        assert store.view("v").aggregator == Sum().spec()
        assert store.view("v").window == Tumbling(length_ms=10).spec()
        assert [(r.window, r.value) for r in store.query("v")] == [((0, 10), 7)]


def test_processes_opening_a_new_store_at_once_create_its_schema_once(tmp_path: Any) -> None:
    """Rivals started together on a new data directory each open the store: one creates the
    schema, the others see it (they failed with "duplicate column name" before)."""
    path = tmp_path / "views.db"
    at = time.time() + 1.0
    code = ("import sys, time; from fluvial.serving.sqlite import SqliteStore\n"
            f"time.sleep(max(0, {at} - time.time())); SqliteStore(sys.argv[1]).close(); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(out == "ok\n" for out, _ in results), [err for _, err in results if err]
    with SqliteStore(path) as store:
        assert store.views() == []
