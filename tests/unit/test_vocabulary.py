"""cache/persist across actions, and what bad input to the new operators and sinks gets.

The conformance suite (``tests/conformance``) checks the operators' results on every
runner; here: that a persisted flow spares the log (reads are counted), when it is
recomputed, what ``explain()`` shows, and the errors -- each names what failed and
how to fix it.  Data comes from a seeded generator (the seed is printed).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import fluvial as fl
from fluvial.config import LogConfig
from fluvial.errors import ConfigError, FlowError, UnsupportedOperation
from fluvial.testing import brute, make_events

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))


@pytest.fixture
def events() -> list[fl.Event]:
    print(f"seed {SEED} (FLUVIAL_TEST_SEED={SEED} reproduces it)")
    return make_events(SEED, 300, devices=7, kinds=["reading", "status"], duplicate_fraction=0.1)


class CountingLog:
    """A log that counts the records its readers got."""

    def __init__(self, log: Any) -> None:
        self.log, self.records = log, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        batch = self.log.read(*args, **kwargs)
        self.records += len(batch.events)
        return batch


@pytest.fixture
def ws(tmp_path: Path, events: list[fl.Event]) -> Any:
    with fl.open(tmp_path / "data", writer=True, log_config=LogConfig(partitions=3, fsync="never")) as ws:
        ws.log.append(events)
        yield ws


def levels_of(pipeline: fl.Pipeline) -> fl.Flow[Any]:
    """The flow the tests persist (one definition: the same code in every pipeline)."""
    return pipeline.from_log("reading").map(lambda e: (e.device, e.payload["level"]))


def expected_levels(events: list[fl.Event]) -> list[tuple[str, int]]:
    return [(e.device, e.payload["level"]) for e in brute.unique(events) if e.kind == "reading"]


def test_two_actions_on_a_cached_flow_read_the_log_once(ws: Any, events: list[fl.Event]) -> None:
    log = CountingLog(ws.log)
    runner = ws.batch_runner(log=log, workers=1, progress=False)
    cached = levels_of(fl.Pipeline("twice")).cache()
    expected = expected_levels(events)
    total = sum(ws.log.end_offsets()) - sum(ws.log.start_offsets())

    assert sorted(cached.collect(runner)) == sorted(expected)
    assert log.records == total                      # the first action reads the log once
    top = cached.take_ordered(5, key=lambda kv: (-kv[1], kv[0]), runner=runner)
    assert top == sorted(expected, key=lambda kv: (-kv[1], kv[0]))[:5]
    assert cached.map(lambda kv: kv[1]).reduce(max, runner) == max(v for _, v in expected)
    assert cached.count_by_key(runner=runner) == dict(Counter(k for k, _ in expected))
    assert log.records == total                      # ... and the other three not at all

    uncached = levels_of(fl.Pipeline("twice"))       # the same flow, not persisted: every action reads
    uncached.count(runner)
    uncached.count(runner)
    assert log.records == 3 * total


def test_a_cached_flow_is_recomputed_when_the_log_grows(ws: Any, events: list[fl.Event]) -> None:
    log = CountingLog(ws.log)
    runner = ws.batch_runner(log=log, workers=1, progress=False)
    cached = levels_of(fl.Pipeline("grows")).cache()
    assert cached.count(runner) == len(expected_levels(events))
    more = make_events(SEED + 1, 40, devices=["late-1", "late-2"])
    ws.log.append(more)
    before = log.records
    assert cached.count(runner) == len(expected_levels(events)) + len(expected_levels(more))
    assert log.records - before == sum(ws.log.end_offsets()) - sum(ws.log.start_offsets())
    cached.unpersist()
    cached.count(runner)                             # forgotten: read again
    assert log.records - before == 2 * (sum(ws.log.end_offsets()) - sum(ws.log.start_offsets()))


def test_persist_disk_is_found_by_another_runner_and_pipeline(ws: Any, events: list[fl.Event]) -> None:
    """A DISK level keeps the elements in DATA_DIR/cache: a new runner with a new pipeline object
    (as another process would build it from the same flow file) reads nothing."""
    first = levels_of(fl.Pipeline("disk")).persist(fl.StorageLevel.DISK)
    assert first.count(ws.batch_runner(workers=1, progress=False)) == len(expected_levels(events))
    assert list((ws.path / "cache" / "disk").glob("*.pickle"))

    log = CountingLog(ws.log)
    again = levels_of(fl.Pipeline("disk")).persist("disk")
    assert sorted(again.collect(ws.batch_runner(log=log, workers=1, progress=False))) == sorted(
        expected_levels(events))
    assert log.records == 0
    assert "DiskSize: 0.0 B" not in again.explain() and "CachedPartitions: 3" in again.explain()

    other_code = fl.Pipeline("disk").from_log("reading").map(lambda e: (e.device, 0)).persist("disk")
    other_code.count(ws.batch_runner(log=log, workers=1, progress=False))
    assert log.records > 0                           # another lambda: another lineage, computed


def test_explain_shows_the_storage_level_then_the_cached_partitions(ws: Any) -> None:
    cached = levels_of(fl.Pipeline("explain")).cache()
    before = cached.explain()
    assert before.splitlines()[0].endswith("[Memory Deserialized 1x Replicated]")
    assert "CachedPartitions" not in before
    cached.count(ws.batch_runner(workers=1, progress=False))
    line = cached.explain().splitlines()[1]
    assert line.startswith("|       CachedPartitions: 3; MemorySize: ")   # one chunk per log partition


def test_persist_disk_without_a_data_directory_is_refused(events: list[fl.Event]) -> None:
    flow = fl.Pipeline("nodir").from_queue([[1, 2], [3]]).persist(fl.StorageLevel.DISK)
    refusal = (r"persist\(StorageLevel.DISK\) at .* keeps its elements in the data directory.*"
               r"fluvial.open\(DATA_DIR\).batch_runner\(\).*cache\(\)")
    with pytest.raises(UnsupportedOperation, match=refusal):
        flow.collect()
    assert fl.Pipeline("mem").from_queue([[1, 2], [3]]).cache().collect() == [1, 2, 3]


# -- bad arguments -------------------------------------------------------------------------

def _pairs() -> fl.Flow[Any]:
    return fl.Pipeline("bad").from_queue([[("a", 1)]])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: _pairs().sample(1.5), r"sample\(\): fraction must be a number in \[0, 1\], got 1.5"),
    (lambda: _pairs().sample(0.5, seed=-1), r"sample\(\): seed must be an integer in \[0, 2\*\*64\), got -1"),
    (lambda: _pairs().repartition(0), r"repartition\(\): expected an integer >= 1, got 0"),
    (lambda: _pairs().coalesce("2"), r"coalesce\(\): expected an integer >= 1, got '2'"),
    (lambda: _pairs().map_values(3), r"map_values\(\): expected a function, got int 3"),
    (lambda: _pairs().flat_map_values(None), r"flat_map_values\(\): expected a function, got NoneType"),
    (lambda: _pairs().sort_by("key"), r"sort_by\(\): expected a function, got str"),
    (lambda: _pairs().persist("fast"), r"persist\(\): unknown storage level 'fast'; use one of StorageLevel.MEMORY"),
    (lambda: _pairs().unpersist(), r"unpersist\(\) applies to a flow returned by cache\(\) or persist\(\)"),
    (lambda: _pairs().take(-1), r"take\(\): n must be an integer >= 0, got -1"),
    (lambda: _pairs().take_ordered(2, key=3), r"take_ordered\(\): key must be a function, got 3"),
    (lambda: _pairs().save_as_text_file(""), r"save_as_text_file\(\): give the directory to write the part files into"),
    (lambda: _pairs().save_as_json_lines(42), r"save_as_json_lines\(\): the path must be a string or a path, got int"),
])
def test_bad_arguments_are_refused_where_the_flow_is_written(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_first_of_an_empty_flow() -> None:
    with pytest.raises(ValueError, match=r"first\(\) of an empty flow"):
        fl.Pipeline("empty").from_queue([[]]).first()


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_bad_sink_paths_are_refused_before_the_run(tmp_path: Path, mode: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for path, message in ((a_file, r"save_as_json_lines at .*: .*a-file is a file; give a directory"),
                          (a_file / "sub", r"save_as_json_lines at .*: cannot create the directory .*a-file/sub: "
                                           r".*; give a path under a writable directory")):
        p = fl.Pipeline(f"paths-{mode}")
        seen: list[Any] = []
        source = p.from_queue([[1, 2]])
        source.foreach(seen.append)
        source.save_as_json_lines(path)
        runner = (fl.BatchRunner() if mode == "batch"
                  else fl.StreamRunner(store=fl.open(tmp_path / "data").store, batch_interval_ms=0))
        with pytest.raises(ConfigError, match=message):
            runner.run(p)
        assert seen == []                             # refused before the first element


@pytest.mark.parametrize(("sink", "elements", "message"), [
    ("save_as_parquet", [1, 2], r"save_as_parquet at .*: element 1 is not a row; Parquet takes dicts"),
    ("save_as_parquet", [{"a": 1}, {"a": "x"}], r"save_as_parquet at .*: the rows do not make one Parquet table"),
    ("save_as_json_lines", [object()], r"save_as_json_lines at .*: element <object object .* is not JSON"),
])
def test_elements_a_file_sink_cannot_write(tmp_path: Path, sink: str, elements: list[Any], message: str) -> None:
    p = fl.Pipeline("rows")
    getattr(p.from_queue([elements]), sink)(tmp_path / "out")
    with pytest.raises(FlowError, match=message):
        fl.BatchRunner().run(p)
    assert [f.name for f in (tmp_path / "out").iterdir()] == []   # nothing half-written is left


def test_a_batch_run_replaces_its_part_and_clears_stale_temporary_files(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".part-00000.jsonl.tmp-999").write_text("half a li")   # a crash left it
    for run in range(2):
        values = [rng.randrange(100) for _ in range(rng.randrange(1, 50))]
        p = fl.Pipeline(f"replace-{run}")
        p.from_queue([values]).save_as_json_lines(out)
        fl.BatchRunner().run(p)
        assert sorted(f.name for f in out.iterdir()) == ["part-00000.jsonl"]
        assert (out / "part-00000.jsonl").read_text().splitlines() == [str(v) for v in values]


def test_a_cached_flow_over_a_file_is_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "words.txt"
    lines = [" ".join(rng.choices("abcde", k=rng.randrange(1, 6))) for _ in range(30)]
    path.write_text("\n".join(lines) + "\n")
    words = fl.Pipeline("file").text_file(path).flat_map(str.split).cache()
    assert words.count() == sum(len(line.split()) for line in lines)
    more = [" ".join(rng.choices("xyz", k=3)) for _ in range(5)]
    path.write_text("\n".join(lines + more) + "\n")     # grown: computed again
    assert sorted(words.collect()) == sorted(w for line in lines + more for w in line.split())


def test_explain_names_the_new_operators(tmp_path: Path) -> None:
    p = fl.Pipeline("lineage")
    pairs = p.from_queue([[("a", 1)]])
    (pairs.keys().sort_by(str, ascending=False).repartition(3).coalesce(1)
     .save_as_json_lines(tmp_path / "out"))
    lines = p.explain().splitlines()
    assert lines[0].startswith(f"FileSink[{p.sinks[0].id}] jsonl {tmp_path / 'out'} at ")
    assert [ln.split("]", 1)[1].split(" at test_")[0] for ln in lines[1:]] == [
        " at coalesce(1)", " at repartition(3)", " at sort_by descending", " at keys", " 1 batches"]
    assert [ln.split("[", 1)[0].strip("|+- ") for ln in lines[1:]] == [
        "CoalescedFlow", "ShuffledFlow", "SortedFlow", "MappedFlow", "QueueSource"]
