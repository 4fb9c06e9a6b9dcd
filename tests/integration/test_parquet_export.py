"""The Parquet master dataset: incremental append-only export, exact round trip through
``ParquetLog``, batch runs over it equal to runs over the log, crash safety, the CLI."""

from __future__ import annotations

import json
import math
import operator
import os
import random
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")

import fluvial as fl
import fluvial.engine.batch as batch_mod
import fluvial.log.parquet as pq_mod
from fluvial.engine.batch import BatchRunner
from fluvial.errors import ConfigError, LogError
from fluvial.events.lost import LOST_KIND
from fluvial.log import LocalLog
from fluvial.log.parquet import MANIFEST, ParquetLog, export_parquet, parquet_files

SEED = random.randrange(2**32)
DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
KINDS = ("reading", "alarm", "status")


def make_events(n: int, first_seq: int, rng: random.Random) -> list[fl.Event]:
    """Several kinds, several days of event time, out of order; awkward payloads too."""
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        payload: dict[str, Any] = {"room": f"r{rng.randrange(4)}", "value": rng.uniform(-50, 50),
                                   "n": rng.randrange(-(2**62), 2**62),
                                   "nested": {"list": [1, "two", None, True, 3.5]},
                                   "text": rng.choice(["", "é ü 漢 🚀", 'q"uote\\', "a\nb"])}
        if i % 97 == 0:
            payload["nan"] = float("nan")       # not JSON: kept exactly anyway
        if i % 89 == 0:
            payload["blob"] = bytes([0, 255, rng.randrange(256)])
        if i % 83 == 0:
            payload["nested"] = {1: "int key"}
        out.append(fl.Event(device=f"dev-{rng.randrange(25)}", kind=kind,
                            ts=T0 + rng.randrange(-3 * DAY, 3 * DAY), seq=first_seq + i,
                            payload=payload))
    return out


def same(a: Any, b: Any) -> bool:
    """Deep equality, types included, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def read_all(log: Any) -> list[list[tuple[Any, int]]]:
    out = []
    for p in range(log.partitions):
        got: list[tuple[Any, int]] = []
        offset, end = log.start_offsets()[p], log.end_offsets()[p]
        while offset < end:
            b = log.read(p, offset, max_records=777)
            got.extend(zip(b.events, b.append_ms))
            offset = b.next_offset
        out.append(got)
    return out


def assert_round_trip(local: Any, export: ParquetLog) -> None:
    assert export.partitions == local.partitions
    assert export.end_offsets() == local.end_offsets()
    for p, (a, b) in enumerate(zip(read_all(local), read_all(export))):
        assert len(a) == len(b)
        for offset, ((ea, ma), (eb, mb)) in enumerate(zip(a, b)):
            assert (ea.device, ea.kind, ea.ts, ea.seq, ma) == (eb.device, eb.kind, eb.ts, eb.seq, mb), (p, offset)
            assert same(ea.payload, eb.payload), (p, offset, ea.payload, eb.payload)
        for d in {e.device for e, _ in a if e.kind != LOST_KIND}:  # placeholders: in the damaged partition
            assert export.partition_for(d) == local.partition_for(d) == p


def files_bytes(out: Path) -> dict[str, bytes]:
    return {str(f.relative_to(out)): f.read_bytes() for f in out.rglob("*.parquet")}


@pytest.fixture
def rng() -> random.Random:
    print(f"seed={SEED}")
    return random.Random(SEED)


def test_incremental_export_round_trips_exactly(tmp_path: Path, rng: random.Random) -> None:
    out = tmp_path / "export"
    with LocalLog.open(tmp_path / "log", partitions=3, fsync="never") as log:
        log.append(make_events(3000, 0, rng))
        first = export_parquet(log, out)
        assert first.events == 3000 and first.upto == log.end_offsets()
        files1 = files_bytes(out)
        assert len(files1) == first.files == len(parquet_files(out))
        for rel in files1:  # the layout: kind=K/date=YYYY-MM-DD/part-p-first-last.parquet
            kind, date, name = rel.split("/")
            assert kind.split("=")[1] in KINDS and len(date) == len("date=2023-11-14")
            assert name.startswith("part-")
        assert {r.split("/")[1] for r in files1} >= {"date=2023-11-12", "date=2023-11-16"}
        with ParquetLog.open(out) as exp:
            assert_round_trip(log, exp)

        again = export_parquet(log, out)  # nothing new: nothing written
        assert (again.events, again.files) == (0, 0) and files_bytes(out) == files1

        before = log.end_offsets()
        log.append(make_events(1500, 3000, rng))
        second = export_parquet(log, out)
        assert second.events == 1500 and second.upto == log.end_offsets()
        files2 = files_bytes(out)
        assert {k: files2[k] for k in files1} == files1  # old files untouched
        new = sorted(set(files2) - set(files1))
        assert len(new) == second.files
        for rel in new:  # new files hold only new offsets
            _, p, lo, hi = Path(rel).stem.split("-")
            assert before[int(p)] <= int(lo) <= int(hi) < log.end_offsets()[int(p)]
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["upto"] == log.end_offsets() and len(manifest["files"]) == len(files2)
        with ParquetLog.open(out) as exp:
            assert_round_trip(log, exp)
            assert [s.records for s in exp.stats()] == [s.records for s in log.stats()]
            assert [(s.min_ts, s.max_ts) for s in exp.stats()] == [
                (s.min_ts, s.max_ts) for s in log.stats()]
            for p in range(log.partitions):
                for t in (0, T0 - 2 * DAY, T0, T0 + DAY + 7, T0 + 10 * DAY):
                    assert exp.offset_for_time(p, t) == log.offset_for_time(p, t)
                b = exp.read(p, 5, stop_offset=9)
                assert (b.start_offset, len(b.events), b.next_offset) == (5, 4, 9)
                assert exp.read(p, exp.end_offsets()[p]).events == []
            with pytest.raises(LogError, match="outside"):
                exp.read(0, exp.end_offsets()[0] + 1)
            with pytest.raises(LogError, match="read-only"):
                exp.append([])


def _pipelines() -> fl.Pipeline:
    p = fl.Pipeline("hist")
    (p.from_log("reading").map(lambda e: e.payload["room"])
     .window(fl.Tumbling(length_ms=HOUR)).count_by_value().to_view("per_room_hour"))
    p.from_log().map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view("per_device")
    return p


def _views(store: Any) -> dict[str, dict[Any, Any]]:
    return {name: {(r.key, r.window): r.value for r in store.query(name)}
            for name in ("per_room_hour", "per_device")}


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_over_export_equals_batch_over_log(tmp_path: Path, rng: random.Random,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 workers: int) -> None:
    monkeypatch.setattr(batch_mod, "PARALLEL_MIN_RECORDS", 1000)  # fork workers when 2
    events = make_events(4000, 0, rng)
    with fl.open(tmp_path / "a", writer=True) as ws:
        ws.log.append(events[:2500])
        export_parquet(ws.log, tmp_path / "export")
        ws.log.append(events[2500:])
        export_parquet(ws.log, tmp_path / "export")
        ws.batch_runner(workers=workers, slice_records=300).run(_pipelines())
        over_log = _views(ws.store)
    with fl.open(tmp_path / "b") as ws2, ParquetLog.open(tmp_path / "export") as exp:
        stats = BatchRunner(log=exp, store=ws2.store, workers=workers,
                            slice_records=300).run(_pipelines())
        over_export = _views(ws2.store)
    assert stats.records_in == len(events)
    assert over_export == over_log
    brute_rooms = Counter((e.payload["room"], (e.ts // HOUR * HOUR, e.ts // HOUR * HOUR + HOUR))
                          for e in events if e.kind == "reading")
    got_rooms = {(k, tuple(w)): v for (k, w), v in over_export["per_room_hour"].items()}
    assert got_rooms == dict(brute_rooms)
    assert {k: v for (k, _), v in over_export["per_device"].items()} == dict(
        Counter(e.device for e in events))


def test_crash_before_manifest_leaves_consistent_export(tmp_path: Path, rng: random.Random,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    with LocalLog.open(tmp_path / "log", partitions=2, fsync="never") as log:
        log.append(make_events(1000, 0, rng))
        export_parquet(log, out)
        manifest = (out / MANIFEST).read_bytes()
        listed = parquet_files(out)
        log.append(make_events(800, 1000, rng))

        def crash(*args: Any) -> None:
            raise OSError("simulated crash before the manifest")

        monkeypatch.setattr(pq_mod, "_write_manifest", crash)
        with pytest.raises(OSError, match="simulated"):
            export_parquet(log, out)
        monkeypatch.undo()
        assert (out / MANIFEST).read_bytes() == manifest  # the old export, intact
        assert len(list(out.rglob("*.parquet"))) > len(listed)  # orphans exist...
        with ParquetLog.open(out) as exp:  # ...and are ignored
            assert sum(exp.end_offsets()) == 1000 and parquet_files(out) == listed
            assert sum(len(b) for b in read_all(exp)) == 1000

        log.append(make_events(200, 1800, rng))  # the log grew meanwhile: orphan names differ
        done = export_parquet(log, out)
        assert done.events == 1000 and done.upto == log.end_offsets()
        on_disk = sorted(str(f.absolute()) for f in out.rglob("*.parquet"))
        assert on_disk == sorted(parquet_files(out))  # orphans gone, nothing duplicated
        assert not list(out.rglob("*.tmp"))
        with ParquetLog.open(out) as exp:
            assert_round_trip(log, exp)
            seen = [(e.device, e.seq) for part in read_all(exp) for e, _ in part]
            assert len(seen) == len(set(seen)) == 2000


def test_rerun_after_crash_is_idempotent(tmp_path: Path, rng: random.Random,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    with LocalLog.open(tmp_path / "log", partitions=2, fsync="never") as log:
        log.append(make_events(500, 0, rng))
        monkeypatch.setattr(pq_mod, "_write_manifest", lambda *a: (_ for _ in ()).throw(OSError("x")))
        with pytest.raises(OSError):
            export_parquet(log, out)
        monkeypatch.undo()
        with pytest.raises(LogError, match="no Parquet export"):
            ParquetLog.open(out)
        orphans = files_bytes(out)
        export_parquet(log, out)
        assert set(files_bytes(out)) == set(orphans)  # same names: stable


def test_bad_directories(tmp_path: Path, rng: random.Random) -> None:
    with LocalLog.open(tmp_path / "log", partitions=2, fsync="never") as log:
        log.append(make_events(50, 0, rng))
        a_file = tmp_path / "file"
        a_file.write_text("x")
        with pytest.raises(ConfigError, match="is a file"):
            export_parquet(log, a_file)
        if os.geteuid() != 0:
            locked = tmp_path / "ro"
            locked.mkdir()
            locked.chmod(0o500)
            try:
                with pytest.raises(LogError, match="not writable"):
                    export_parquet(log, locked)
            finally:
                locked.chmod(0o700)
        export_parquet(log, tmp_path / "export")
    with (LocalLog.open(tmp_path / "other", partitions=3, fsync="never") as other,
          pytest.raises(ConfigError, match="partitions")):
        export_parquet(other, tmp_path / "export")
    with (LocalLog.open(tmp_path / "small", partitions=2, fsync="never") as small,
          pytest.raises(LogError, match="another log")):
        export_parquet(small, tmp_path / "export")
    with pytest.raises(LogError, match="no Parquet export"):
        ParquetLog.open(tmp_path / "nothing")


def fluvial_cmd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLUVIAL_HOME"}
    return subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(home),
                           *args], capture_output=True, text=True, env=env, cwd=home.parent,
                          timeout=120, check=False)


def test_cli_export(tmp_path: Path, rng: random.Random) -> None:
    data = tmp_path / "r.jsonl"
    rows = [{"device": f"d{rng.randrange(9)}", "ts": T0 + rng.randrange(-2 * DAY, 2 * DAY),
             "kind": "temp", "value": rng.random()} for _ in range(300)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    home, out = tmp_path / "home", tmp_path / "export"
    p = fluvial_cmd(home, "log", "export", "--format", "parquet", str(out))
    assert p.returncode == 1 and "no data directory" in p.stderr
    ing = fluvial_cmd(home, "ingest", str(data), "--kind", "reading", "--device-field", "device",
                      "--ts-field", "ts")
    assert ing.returncode == 0, ing.stderr
    p = fluvial_cmd(home, "log", "export", "--format", "parquet", str(out))
    assert p.returncode == 0, p.stderr
    assert "exported 300 events into" in p.stdout and "offsets up to: [" in p.stdout
    assert "\r" not in p.stderr
    p = fluvial_cmd(home, "log", "export", str(out))
    assert p.returncode == 0 and "up to date" in p.stdout
    with ParquetLog.open(out) as exp:
        got = sorted((e.device, e.ts, e.payload["value"]) for part in read_all(exp) for e, _ in part)
    assert got == sorted((r["device"], r["ts"], r["value"]) for r in rows)
    p = fluvial_cmd(home, "log", "export", "--format", "csv", str(out))
    assert p.returncode == 2
    (tmp_path / "afile").write_text("")
    p = fluvial_cmd(home, "log", "export", str(tmp_path / "afile"))
    assert p.returncode == 1 and "is a file" in p.stderr
    h = fluvial_cmd(home, "log", "export", "--help")
    assert h.returncode == 0 and "ParquetLog.open" in h.stdout


# -- placeholders of records lost to damage ----------------------------------------------------

LAYOUT = struct.Struct("<4sQIIqqqII")  # segment.py: magic, base, count, length, append_ms, min/max ts, crc, hcrc


def damage_sealed_batches(log_dir: Path, rng: random.Random, beyond: list[int]) -> set[tuple[int, int]]:
    """Flip a payload bit of 1 to 3 random batches of sealed segments, at offsets >= ``beyond[p]``
    (not exported yet); return their positions (salvage keeps them as placeholders)."""
    choices = []
    for pdir in sorted(log_dir.glob("p-*")):
        p = int(pdir.name[2:])
        for seg in sorted(pdir.glob("*.seg"))[:-1]:
            data, pos = seg.read_bytes(), 0
            while pos < len(data):
                _, base, count, length, *_ = LAYOUT.unpack_from(data, pos)
                if base >= beyond[p]:
                    choices.append((p, seg, pos + LAYOUT.size, pos + LAYOUT.size + length, base, count))
                pos += LAYOUT.size + length
    lost = set()
    for p, seg, start, end, base, count in rng.sample(choices, rng.randint(1, 3)):
        data = bytearray(seg.read_bytes())
        data[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(data))
        lost |= {(p, o) for o in range(base, base + count)}
    return lost


def test_placeholders_of_lost_records_stay_out_of_the_files(tmp_path: Path, rng: random.Random,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real salvaged log: the files hold exactly the surviving events, the manifest and the
    report count the placeholders left out, and ParquetLog gives the log back exactly."""
    import pyarrow.parquet as pq

    from fluvial.log.salvage import salvage

    monkeypatch.setattr(pq_mod, "CHUNK_RECORDS", 97)  # runs of placeholders cut by chunks are joined
    data, out = tmp_path / "data", tmp_path / "export"
    events = make_events(3000, 0, rng)
    positions: dict[tuple[int, int], fl.Event] = {}
    with LocalLog.open(data / "log", partitions=3, segment_bytes=4096, fsync="never") as log:
        i = 0
        while i < len(events):  # small batches: several per segment, many segments
            part = events[i:i + rng.randint(1, 25)]
            for ev, pos in zip(part, log.append(part).positions):
                assert pos is not None
                positions[pos] = ev
            i += len(part)
            if i >= 1000 and not out.exists():
                first = export_parquet(log, out)  # before the damage
        before = first.upto
    lost = damage_sealed_batches(data / "log", rng, before)
    result = salvage(data)
    assert result.lost == len(lost) and result.after is not None and result.after.intact
    print(f"{len(lost)} records lost in partitions {sorted({p for p, _ in lost})}")

    with LocalLog.open(data / "log") as log:
        assert {(p, o) for p, end in enumerate(log.end_offsets()) for o, e in
                enumerate(log.read(p, 0, max_records=end).events) if e.kind == LOST_KIND} == lost
        second = export_parquet(log, out)
        new = sum(e - b for e, b in zip(log.end_offsets(), before))
        assert (second.lost, second.events) == (len(lost), new - len(lost))
        files = [r for f in parquet_files(out) for r in pq.ParquetFile(f).read().to_pylist()]  # what Spark sees
        assert not list(out.glob(f"kind={LOST_KIND}*"))
        assert all(r["kind"] != LOST_KIND and r["device"] != LOST_KIND for r in files)
        assert sorted((r["partition"], r["offset"]) for r in files) == sorted(set(positions) - lost)
        for r in files:
            ev = positions[(r["partition"], r["offset"])]
            assert (r["device"], r["kind"], r["ts"], r["seq"]) == (ev.device, ev.kind, ev.ts, ev.seq)
        manifest = json.loads((out / MANIFEST).read_text())
        assert {(r["partition"], o) for r in manifest["lost"] for o in range(r["first"], r["stop"])} == lost
        assert manifest["exports"][-1]["lost"] == len(lost) and manifest["exports"][0]["lost"] == 0
        with ParquetLog.open(out) as exp:  # the log as it is, placeholders at their offsets
            assert_round_trip(log, exp)
            assert [(s.records, s.min_ts, s.max_ts) for s in exp.stats()] == [
                (s.records, s.min_ts, s.max_ts) for s in log.stats()]
            for p, o in sorted(lost)[:: max(1, len(lost) // 5)]:
                for t in (log.read(p, o, max_records=1).events[0].ts, T0, T0 + DAY):
                    assert exp.offset_for_time(p, t) == log.offset_for_time(p, t), (p, o, t)
        more = make_events(300, 10_000, rng)
        log.append(more)
        third = export_parquet(log, out)  # incremental: the placeholders stay listed, none new
        assert (third.lost, third.events) == (0, 300)
        with ParquetLog.open(out) as exp:
            assert_round_trip(log, exp)

    with fl.open(data) as ws, ParquetLog.open(out) as exp:  # batch runs skip them, over either
        BatchRunner(log=exp, store=ws.store, slice_records=300).run(_pipelines())
        over_export = _views(ws.store)
        ws.batch_runner(slice_records=300).run(_pipelines())
        over_log = _views(ws.store)
    survivors = [e for pos, e in positions.items() if pos not in lost] + more
    assert over_export == over_log
    assert {k: v for (k, _), v in over_export["per_device"].items()} == dict(Counter(e.device for e in survivors))
