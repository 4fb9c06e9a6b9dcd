"""Conformance: the same flows on every runner give the same rows (DESIGN principle 1).

Each flow of :data:`fluvial.testing.catalog.CATALOG` runs on each runner of
``conftest.RUNNERS`` over a few datasets and must equal the brute-force rows
(every event for a batch-like runner; the on-time events for a speed-layer
runner, whose late count must match too).  On data without late events,
every runner must give identical rows.
"""

from __future__ import annotations

import operator
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from device_time_world import as_devices_deliver, clock_ahead, device_events, expected, now_start
from device_time_world import pipeline as device_time_pipeline
from fluvial import Count, Event, Pipeline, Session, Tumbling
from fluvial.errors import UnsupportedOperation
from fluvial.serving.base import Row
from fluvial.testing import brute, events_table, make_events
from fluvial.testing.catalog import (
    CATALOG,
    Case,
    build_pipeline,
    expected_late,
    expected_tables,
    expected_views,
)
from fluvial.testing.vocabulary import VOCABULARY, VocabularyCase, build_vocabulary, read_outputs

START_MS = 1_700_000_000_000
PARTITIONS = 3  # of the conformance runners' logs (see conftest.Runner.partitions)

DATASETS = {
    # Two devices, a retry (d1 seq 3 twice), a status for the join, an event 6 s
    # behind (late for lateness < 6000 in d2's partition), ties on window edges.
    "table": events_table(f"""
        | device | kind    | ts              | seq | value | level | color |
        | d1     | reading | {START_MS}      | 1   | 1.5   | 2     | red   |
        | d2     | reading | {START_MS + 999}  | 1   | -2.0  | 0     | blue  |
        | d1     | status  | {START_MS + 1500} | 2   | 0.0   | 5     | red   |
        | d1     | reading | {START_MS + 9000} | 3   | 4.25  | 9     | green |
        | d1     | reading | {START_MS + 9000} | 3   | 4.25  | 9     | green |
        | d2     | reading | {START_MS + 11000} | 2  | 10.0  | 1     | blue  |
        | d2     | reading | {START_MS + 5000} | 3   | 0.5   | 3     | red   |
        | d1     | reading | {START_MS + 12000} | 4  | 7.0   | 4     | red   |
    """),
    "in_order": make_events(101, 300, devices=6, kinds=["reading", "reading", "status"],
                            start_ms=START_MS, step_ms=500, duplicate_fraction=0.1),
    "late": make_events(202, 300, devices=6, kinds=["reading", "reading", "status"], start_ms=START_MS,
                        step_ms=500, out_of_order_ms=4_000, late_fraction=0.05, late_by_ms=40_000,
                        duplicate_fraction=0.1),
}


def _fleet(seed: int) -> list[Event]:
    """Devices as they deliver (issue 11), stamped around the wall clock now: d0's clock runs two
    hours ahead, d1 and d2 go offline and flush their backlog later in their own order, and some
    events come late."""
    start = int(time.time() * 1000) - 1800_000
    return as_devices_deliver(make_events(seed, 300, devices=6, kinds=["reading", "reading", "status"],
                                          start_ms=start, step_ms=2_000, out_of_order_ms=1_000,
                                          late_fraction=0.05, late_by_ms=40_000, duplicate_fraction=0.05),
                              {"d1": (0.2, 0.67), "d2": (0.33, 0.93)})


DATASETS["devices"] = _fleet(303)
FUTURE = {"devices": clock_ahead}   # datasets with future-stamped events


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("case", CATALOG, ids=[c.name for c in CATALOG])
def test_catalog_flow(embedded_runner: Any, case: Case, dataset: str, tmp_path: Path) -> None:
    """Each flow alone, on the local runners over the embedded backends."""
    check_catalog(embedded_runner, [case], dataset, tmp_path)


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_catalog_at_once(other_runner: Any, dataset: str, tmp_path: Path) -> None:
    """Every flow in one pipeline, on every other runner: the local ones on NATS, PostgreSQL and
    Cassandra, and the Spark ones (one run per dataset instead of one per flow, each of which
    costs round trips or a Spark job; the flows share their sources, as users' pipelines do).
    Each flow's view, late count and tables are still checked against its brute force."""
    check_catalog(other_runner, list(CATALOG), dataset, tmp_path)


def check_catalog(runner: Any, cases: list[Case], dataset: str, tmp_path: Path) -> None:
    events, future = DATASETS[dataset], FUTURE.get(dataset)
    assert runner.partitions == PARTITIONS
    result = runner.run(build_pipeline(cases, name=cases[0].name if len(cases) == 1 else "catalog"), events,
                        tmp_path)
    expected = expected_views(cases, events, partitions=PARTITIONS, stream=runner.drops_late, future=future)
    late = expected_late(cases, events, partitions=PARTITIONS, future=future)
    for case in cases:
        assert result[case.name] == expected[case.name], case.name
        assert result.late[case.name] == (late[case.name] if runner.drops_late else 0), case.name
    assert result.tables == expected_tables(cases, events, partitions=PARTITIONS, stream=runner.drops_late,
                                            future=future)


def test_device_time_world(runner: Any, tmp_path: Path) -> None:
    """The event-time rules (issue 11) on every runner, Spark included: devices offline then
    flushing their backlog, a clock two hours ahead, late events, a short correction horizon;
    views (per device and per partition, sliding, top), late counts, the late side output and
    the save_to tables of changes and of closed windows (``emit="final"``) against the brute
    force (tests/device_time_world.py)."""
    print(f"seed={DEVICE_WORLD_SEED}")
    events, ahead = device_events(random.Random(DEVICE_WORLD_SEED), n=600, devices=12, ahead=1,
                                  behind_ms=600_000, offline=0.1, late=0.05, start_ms=now_start())
    result = runner.run(device_time_pipeline(), events, tmp_path)
    views, late, tables = expected(events, ahead, stream=runner.streams,
                                   history=-(-len(events) // runner.appends))
    for name, rows in views.items():
        assert result[name] == rows, name
    assert result.late == (late if runner.streams else dict.fromkeys(late, 0))
    assert result.tables == tables


DEVICE_WORLD_SEED = random.SystemRandom().randrange(2**32)


def test_the_late_dataset_has_late_events_and_the_in_order_one_none() -> None:
    """Guard the datasets: otherwise the tests above would not test what they say."""
    assert sum(expected_late(CATALOG, DATASETS["late"], partitions=PARTITIONS).values()) > 0
    assert sum(expected_late(CATALOG, DATASETS["in_order"], partitions=PARTITIONS).values()) == 0
    # The devices dataset: backlogs a partition watermark would call late, and state downstream
    # (the save_to table of tumbling_sum) missing what came after its window closed.
    fleet = DATASETS["devices"]
    by_partition = brute.split_late(fleet, partitions=PARTITIONS, lateness_ms=2_000,
                                    select=lambda e: e.kind == "reading")[1]
    by_device = brute.split_event_time(fleet, partitions=PARTITIONS, lateness_ms=2_000,
                                       select=lambda e: e.kind == "reading", future=FUTURE["devices"])
    assert len(by_partition) > 2 * len(by_device.late) > 0
    assert len(by_device.tables) < len(by_device.views)


@pytest.mark.spark   # (it runs the Spark runners too: with the other Spark tests, one at a time)
@pytest.mark.parametrize("dataset", ["in_order"])
def test_every_runner_gives_identical_rows(all_runners: dict[str, Any], dataset: str, tmp_path: Path) -> None:
    events = DATASETS[dataset]
    results = {name: r.run(build_pipeline(CATALOG), events, tmp_path) for name, r in all_runners.items()}
    reference_name, reference = next(iter(results.items()))
    for name, result in results.items():
        assert result.views == reference.views, f"{name} differs from {reference_name}"
        assert result.tables == reference.tables, f"{name} differs from {reference_name}"


# -- flows over in-memory queues (no log) -------------------------------------------------------

def test_word_count_over_a_queue(runner: Any, tmp_path: Path) -> None:
    p = Pipeline("wc")
    lines = p.from_queue([["to be or", "not to be"], [], ["be quick"]])
    lines.flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add).to_view("wc")
    result = runner.run_or_refuse(p, tmp_path)
    assert result is None or result["wc"] == [
        Row("be", None, 3), Row("not", None, 1), Row("or", None, 1), Row("quick", None, 1), Row("to", None, 2)]


def test_windowed_counts_over_a_queue(runner: Any, tmp_path: Path) -> None:
    """Queue batch i has event time i * 1000 ms; Tumbling(2000)::

        batch   0      1      2      3
        time    0      1000   2000   3000
                [ a b   a    )[ b          )
    """
    p = Pipeline("wq")
    (p.from_queue([["a", "b"], ["a"], ["b"], []], interval_ms=1000).map(lambda w: (w, w))
     .window(Tumbling(length_ms=2000)).aggregate_by_key(Count()).to_view("wq"))
    result = runner.run_or_refuse(p, tmp_path)
    assert result is None or result["wq"] == [
        Row("a", (0, 2000), 2), Row("b", (0, 2000), 1), Row("b", (2000, 4000), 1)]


def test_save_to_over_a_queue(runner: Any, tmp_path: Path) -> None:
    p = Pipeline("sq")
    q = p.from_queue([[("x", 1), ("y", 2)], [("x", 3)]])
    q.reduce_by_key(operator.add).save_to(None, "totals", ["k", "total"])
    q.map(lambda kv: (kv[0], kv[1] * 10)).save_to(None, "last_seen", ["k", "v"])
    result = runner.run_or_refuse(p, tmp_path)
    if result is None:
        return
    assert result.tables["totals"] == [{"k": "x", "total": 4}, {"k": "y", "total": 2}]
    # A plain flow upserts every element: the last one per key wins, in queue order.
    assert result.tables["last_seen"] == [{"k": "x", "v": 30}, {"k": "y", "v": 20}]


def test_brute_force_of_the_table_dataset_by_hand() -> None:
    """Anchor the brute force itself on the hand-written dataset (the retry is dropped)."""
    events = DATASETS["table"]
    counts = expected_views(CATALOG, events, partitions=PARTITIONS, stream=False)["counts_by_device"]
    assert counts == [Row("d1", None, 3), Row("d2", None, 3)]
    assert len(brute.unique(events)) == 7


def test_session_table_saved_to_a_table(runner: Any, tmp_path: Path) -> None:
    """save_to of a session-windowed table: only the final sessions belong in the table.

    ::

        d1 events   0          800        1500           (gap 1000, one per micro-batch)
        batch 1     [0, 1000)
        batch 2     [0, 1800)   <- [0, 1000) grew: its row would be superseded
        batch 3     [0, 2500)   <- final session, 3 events

    A stream run cannot retract rows saved under a superseded session window
    (they went through the user's functions), so it refuses the flow before the
    first micro-batch; the batch runner saves the final sessions.
    """
    events = events_table("""
        | device | ts   | value |
        | d1     | 0    | 1     |
        | d1     | 800  | 1     |
        | d1     | 1500 | 1     |
    """)
    p = Pipeline("sessions")
    table = (p.from_log("reading").map(lambda e: (e.device, 1))
             .window(Session(gap_ms=1000), allowed_lateness_ms=5000).aggregate_by_key(Count()))
    table.to_view("sessions")
    table.save_to(None, "sessions", ["device", "window", "n"], key_columns=2)
    if runner.drops_late:  # the stream runners (speed-layer semantics) refuse it
        with pytest.raises(UnsupportedOperation, match="cannot save a session-windowed table"):
            runner.run(p, events, tmp_path)
        return
    result = runner.run(p, events, tmp_path)
    assert result["sessions"] == [Row("d1", (0, 2500), 3)]
    assert result.tables["sessions"] == [{"device": "d1", "window": "[0,2500]", "n": 3}]


# -- the rest of Spark's vocabulary (issue 15) -----------------------------------------------------

@pytest.mark.parametrize("case", VOCABULARY, ids=[c.name for c in VOCABULARY])
def test_vocabulary_flow(runner: Any, case: VocabularyCase, tmp_path: Path) -> None:
    """Views and file sinks of the derived operators equal the brute force on every runner; a
    stream runner refuses a bounded flow (sort, outer joins, subtraction) before writing anything.
    The local runners take every dataset, the Spark runners the richest one (retries, events out
    of order and late), to keep the suite's time."""
    for dataset in ["late"] if runner.name.startswith("spark") else ["table", "in_order", "late"]:
        events = DATASETS[dataset]
        out = tmp_path / dataset / "out"
        pipeline = build_vocabulary(case, out)
        if case.bounded and runner.streams:
            with pytest.raises(UnsupportedOperation, match="needs all of its input before it emits"):
                runner.run(pipeline, events, tmp_path)
            assert not out.exists()
            continue
        result = runner.run(pipeline, events, tmp_path)
        for view, rows in case.expected_views(events).items():
            assert result[view] == rows, (dataset, view)
        expected = case.expected_files(events)
        assert read_outputs(case, out) == expected, dataset
        assert any(expected.values()), "the dataset gives the file sinks nothing to write"
        assert not list(out.rglob(".*")), "a temporary part file was left behind"


def test_actions(runner: Any, tmp_path: Path) -> None:
    """take, first, take_ordered, count_by_key, count and collect over a persisted flow, on a
    batch runner: the brute force in log order (partition by partition); a stream runner refuses
    every action, saying what to use instead."""
    from fluvial.config import LogConfig
    from fluvial.workspace import Workspace

    events = DATASETS["late"]
    with Workspace(tmp_path / "ws", writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
        ws.log.append(list(events))
        assert runner.make is not None
        r = runner.make(ws)
        levels = Pipeline("actions").from_log("reading").map(lambda e: (e.device, e.payload["level"])).cache()
        if runner.streams:
            for action in (lambda: levels.collect(r), lambda: levels.count(r), lambda: levels.take(3, runner=r),
                           lambda: levels.first(runner=r), lambda: levels.take_ordered(2, runner=r),
                           lambda: levels.count_by_key(runner=r)):
                with pytest.raises(UnsupportedOperation, match="a stream run has no end"):
                    action()
            return
        expected = [(e.device, e.payload["level"]) for part in brute.log_order(events, PARTITIONS)
                    for e in part if e.kind == "reading"]
        by_level = lambda kv: (-kv[1], kv[0])  # noqa: E731
        assert levels.collect(r) == expected
        assert levels.count(r) == len(expected)
        assert levels.take(7, runner=r) == expected[:7]
        assert levels.first(runner=r) == expected[0]
        assert levels.take_ordered(5, key=by_level, runner=r) == sorted(expected, key=by_level)[:5]
        assert levels.take_ordered(3, runner=r) == sorted(expected)[:3]
        for ascending in (True, False):   # many ties: they keep the input order both ways
            by_value = levels.sort_by(lambda kv: kv[1], ascending=ascending)
            assert by_value.collect(r) == sorted(expected, key=lambda kv: kv[1], reverse=not ascending)
        counts: dict[str, int] = {}
        for k, _ in expected:
            counts[k] = counts.get(k, 0) + 1
        assert levels.count_by_key(runner=r) == counts
        if runner.name == "spark-batch":   # the actions shared one persisted RDD: Spark kept its partitions
            levels.foreach(lambda _: None)
            lineage = r.explain(levels.pipeline)
            assert re.search(r"CachedPartitions: [1-9]", lineage), lineage
