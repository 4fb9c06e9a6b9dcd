"""Reference flows for the rest of Spark's vocabulary, each with its brute force.

Like :mod:`fluvial.testing.catalog`, but a case here has several outputs: views
and file sinks (``save_as_text_file``, ``save_as_json_lines``, ``save_as_parquet``)
written under a directory the test gives.  The brute force is plain Python over
the de-duplicated events (none of these flows has a window, so every runner sees
every event).  A *bounded* case (sorts, outer joins, ``subtract_by_key``) runs on
batch runners only; stream runners must refuse it before they start.

Example:
    >>> import tempfile
    >>> from fluvial.testing import make_events, run_batch
    >>> out = tempfile.mkdtemp()
    >>> evs = make_events(3, 40, kinds=["reading", "status"])
    >>> case = VOCABULARY[0]
    >>> result = run_batch(build_vocabulary(case, out), evs, tempfile.mkdtemp())
    >>> all(result[v] == rows for v, rows in case.expected_views(evs).items())
    True
    >>> read_outputs(case, out) == case.expected_files(evs)
    True
"""

from __future__ import annotations

import json
import operator
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from fluvial.aggregators import Sum
from fluvial.events.envelope import Event
from fluvial.flow.graph import Flow, Pipeline
from fluvial.flow.storage import StorageLevel
from fluvial.serving.base import Row
from fluvial.testing import brute

__all__ = ["VOCABULARY", "FileOut", "VocabularyCase", "build_vocabulary", "read_outputs"]


@dataclass(frozen=True)
class FileOut:
    """A file sink's directory (under the output directory) and what it must hold.

    Attributes:
        format: ``text``, ``jsonl`` or ``parquet``.
        expect: The elements from the de-duplicated events, as JSON values
            (text: the lines).
        ordered: The part files, read in name order, must hold them in this
            order (a sort); else compared as multisets.
    """

    format: str
    expect: Callable[[list[Event]], list[Any]]
    ordered: bool = False


@dataclass(frozen=True)
class VocabularyCase:
    """One reference pipeline: ``build(readings, statuses, out_dir)`` adds its sinks."""

    name: str
    build: Callable[[Flow[Event], Flow[Event], Path], None]
    views: dict[str, Callable[[list[Event]], list[Row]]] = field(default_factory=dict)
    files: dict[str, FileOut] = field(default_factory=dict)
    bounded: bool = False

    def expected_views(self, events: Sequence[Event]) -> dict[str, list[Row]]:
        seen = brute.unique(events)
        return {name: expect(seen) for name, expect in self.views.items()}

    def expected_files(self, events: Sequence[Event]) -> dict[str, list[Any]]:
        seen = brute.unique(events)
        out = {}
        for name, f in self.files.items():
            rows = json.loads(json.dumps(f.expect(seen)))   # tuples as lists, as JSON gives them back
            out[name] = rows if f.ordered else sorted(rows, key=_canonical)
        return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def build_vocabulary(case: VocabularyCase, out_dir: str | os.PathLike[str]) -> Pipeline:
    """The pipeline of ``case``, writing its files under ``out_dir``."""
    p = Pipeline(case.name)
    case.build(p.from_log("reading"), p.from_log("status"), Path(out_dir))
    return p


def read_outputs(case: VocabularyCase, out_dir: str | os.PathLike[str]) -> dict[str, list[Any]]:
    """What the file sinks of ``case`` left: every visible part file (names not starting
    with a dot), in name order, decoded; sorted unless the output is ordered."""
    out = {}
    for name, f in case.files.items():
        rows: list[Any] = []
        directory = Path(out_dir) / name
        for part in sorted(directory.iterdir()) if directory.is_dir() else []:
            if part.name.startswith("."):
                continue
            if f.format == "parquet":
                import pyarrow.parquet as pq

                rows += pq.read_table(part).to_pylist()
            else:
                lines = part.read_text(encoding="utf-8").splitlines()
                rows += [json.loads(line) for line in lines] if f.format == "jsonl" else lines
        out[name] = rows if f.ordered else sorted(rows, key=_canonical)
    return out


# -- plain-Python helpers ------------------------------------------------------------------

def _readings(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "reading"]


def _statuses(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "status"]


def _level(e: Event) -> Any:
    return e.payload["level"]


def _by_device(events: list[Event], value: Callable[[Event], Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for e in events:
        groups.setdefault(e.device, []).append(value(e))
    return groups


def _view(groups: dict[Any, Any]) -> list[Row]:
    return brute.sort_rows(Row(k, None, v) for k, v in groups.items())


# -- keyed flows: map_values, flat_map_values, group_by_key, cogroup, keys, values ----------

def _keyed_build(readings: Flow[Event], statuses: Flow[Event], out: Path) -> None:
    levels = readings.map(lambda e: (e.device, e.payload["level"]))
    (levels.map_values(lambda v: v + 1).flat_map_values(lambda v: range(v % 4))
     .aggregate_by_key(Sum()).to_view("expanded_sums"))
    levels.group_by_key().to_view("levels_by_device")
    levels.cogroup(statuses.map(lambda e: (e.device, e.payload["color"]))).to_view("cogrouped")
    levels.keys().save_as_text_file(out / "keys")
    levels.values().save_as_json_lines(out / "values")


def _expanded_sums(events: list[Event]) -> list[Row]:
    groups: dict[str, list[int]] = {}
    for e in _readings(events):
        for u in range((_level(e) + 1) % 4):   # no values: no row for the device (unless others give one)
            groups.setdefault(e.device, []).append(u)
    return _view({k: sum(v) for k, v in groups.items()})


def _cogrouped(events: list[Event]) -> list[Row]:
    levels = _by_device(_readings(events), _level)
    colors = _by_device(_statuses(events), lambda e: e.payload["color"])
    return _view({k: (sorted(levels.get(k, [])), sorted(colors.get(k, []))) for k in {*levels, *colors}})


KEYED = VocabularyCase(
    "keyed_vocab", _keyed_build,
    views={"expanded_sums": _expanded_sums,
           "levels_by_device": lambda evs: _view({k: sorted(v) for k, v in _by_device(_readings(evs), _level).items()}),
           "cogrouped": _cogrouped},
    files={"keys": FileOut("text", lambda evs: [e.device for e in _readings(evs)]),
           "values": FileOut("jsonl", lambda evs: [_level(e) for e in _readings(evs)])},
)


# -- any flow: distinct, sample, repartition/coalesce, persist, Parquet -------------------------

def _element_build(readings: Flow[Event], statuses: Flow[Event], out: Path) -> None:
    readings.map(lambda e: e.payload["color"]).distinct().save_as_json_lines(out / "colors")
    readings.map(lambda e: (e.device, e.seq)).sample(0.4, seed=11).save_as_json_lines(out / "sampled")
    readings.map(lambda e: e.seq).repartition(3).coalesce(2).save_as_json_lines(out / "reshuffled")
    cached = readings.map(lambda e: (e.device, 1)).persist(StorageLevel.MEMORY_AND_DISK)
    cached.reduce_by_key(operator.add).to_view("cached_counts")
    cached.keys().save_as_text_file(out / "cached_keys")
    (statuses.map(lambda e: {"device": e.device, "seq": e.seq, "level": e.payload["level"]})
     .save_as_parquet(out / "statuses"))


def _sampled(events: list[Event]) -> list[Any]:
    # sample(0.4, seed=11): the 64-bit xxHash of repr(element) with the seed, below 0.4 * 2**64
    return [[e.device, e.seq] for e in _readings(events)
            if xxhash.xxh64_intdigest(repr((e.device, e.seq)).encode(), 11) < 0.4 * 2**64]


ELEMENTS = VocabularyCase(
    "element_vocab", _element_build,
    views={"cached_counts": lambda evs: _view({k: len(v) for k, v in _by_device(_readings(evs), _level).items()})},
    files={"colors": FileOut("jsonl", lambda evs: sorted({e.payload["color"] for e in _readings(evs)})),
           "sampled": FileOut("jsonl", _sampled),
           "reshuffled": FileOut("jsonl", lambda evs: [e.seq for e in _readings(evs)]),
           "cached_keys": FileOut("text", lambda evs: [e.device for e in _readings(evs)]),
           "statuses": FileOut("parquet", lambda evs: [{"device": e.device, "seq": e.seq, "level": _level(e)}
                                                       for e in _statuses(evs)])},
)


# -- bounded: sort_by, the outer joins, subtract_by_key ----------------------------------------

def _left_device(device: str) -> bool:
    """The devices whose readings join (a third lack them: right-only keys)."""
    return zlib.crc32(device.encode()) % 3 != 0


def _right_device(device: str) -> bool:
    """The devices whose statuses join (a third lack them: left-only keys)."""
    return zlib.crc32(device.encode()) % 3 != 1


def _bounded_build(readings: Flow[Event], statuses: Flow[Event], out: Path) -> None:
    levels = readings.filter(lambda e: _left_device(e.device)).map(lambda e: (e.device, e.payload["level"]))
    colors = statuses.filter(lambda e: _right_device(e.device)).map(lambda e: (e.device, e.payload["color"]))
    levels.left_outer_join(colors).save_as_json_lines(out / "left")
    levels.right_outer_join(colors).save_as_json_lines(out / "right")
    levels.full_outer_join(colors).save_as_json_lines(out / "full")
    levels.subtract_by_key(colors).save_as_json_lines(out / "subtracted")
    (readings.sort_by(lambda e: (-e.ts, e.device, e.seq)).map(lambda e: f"{e.ts} {e.device} {e.seq}")
     .save_as_text_file(out / "sorted"))


def _outer(events: list[Event], left: bool, right: bool) -> list[Any]:
    levels = _by_device([e for e in _readings(events) if _left_device(e.device)], _level)
    colors = _by_device([e for e in _statuses(events) if _right_device(e.device)], lambda e: e.payload["color"])
    out = []
    for k in {*levels, *colors}:
        ls, rs = levels.get(k, []), colors.get(k, [])
        if ls and rs:
            out += [[k, [v, w]] for v in ls for w in rs]
        elif ls and left:
            out += [[k, [v, None]] for v in ls]
        elif rs and right:
            out += [[k, [None, w]] for w in rs]
    return out


BOUNDED = VocabularyCase(
    "bounded_vocab", _bounded_build, bounded=True,
    files={"left": FileOut("jsonl", lambda evs: _outer(evs, True, False)),
           "right": FileOut("jsonl", lambda evs: _outer(evs, False, True)),
           "full": FileOut("jsonl", lambda evs: _outer(evs, True, True)),
           "subtracted": FileOut("jsonl", lambda evs: [
               [e.device, _level(e)] for e in _readings(evs) if _left_device(e.device)
               and e.device not in {s.device for s in _statuses(evs) if _right_device(s.device)}]),
           "sorted": FileOut("text", lambda evs: [
               f"{e.ts} {e.device} {e.seq}" for e in sorted(_readings(evs), key=lambda e: (-e.ts, e.device, e.seq))],
               ordered=True)},
)

VOCABULARY: tuple[VocabularyCase, ...] = (KEYED, ELEMENTS, BOUNDED)
