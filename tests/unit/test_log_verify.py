"""``fluvial log verify`` and ``fluvial log salvage`` on real log files with seeded damage.

Each test writes a log with a random number of events, flips one random bit (or
scribbles random bytes) at a random place, and checks that verify finds exactly
that damage and salvage keeps exactly every other record. What is expected is
computed here, independently of :mod:`fluvial.log.verify`: the frame layout is
read with the struct that the docstring of ``segment.py`` documents, and the
records before and after are compared as sets of ``(partition, offset, event)``.
``FLUVIAL_TEST_SEED=<n>`` reproduces a run (each test prints its seed).
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluvial.cli.main import main
from fluvial.errors import CorruptLogError, LogError
from fluvial.events import Event
from fluvial.events.lost import LOST_KIND
from fluvial.log import DeadLetterLog, LocalLog
from fluvial.log.deadletter import DeadLetter
from fluvial.log.salvage import QUARANTINE, salvage
from fluvial.log.verify import verify

# segment.py: magic 4s, base u64, count u32, length u32, append_ms i64, min_ts i64, max_ts i64, crc u32,
# header_crc u32 -- little-endian, then `length` payload bytes
LAYOUT = struct.Struct("<4sQIIqqqII")
Record = tuple[int, int, Any]  # (partition, offset, event)


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (FLUVIAL_TEST_SEED={seed} reproduces it)")
    return random.Random(seed)


def frames(data: bytes) -> list[tuple[int, int, int, int]]:
    """``(pos, end, base, count)`` of every batch of an intact segment file."""
    out, pos = [], 0
    while pos < len(data):
        magic, base, count, length, *_ = LAYOUT.unpack_from(data, pos)
        assert magic == b"FLB1"
        out.append((pos, pos + LAYOUT.size + length, base, count))
        pos += LAYOUT.size + length
    assert pos == len(data)
    return out


def write_log(root: Path, rng: random.Random, partitions: int | None = None) -> dict[tuple[int, int], Event]:
    """A log with random events in random batches (small segments); ``(partition, offset) -> event``."""
    stored: dict[tuple[int, int], Event] = {}
    seqs: dict[str, int] = {}
    n_batches = rng.randint(40, 90)
    with LocalLog.open(root / "log", partitions=partitions or rng.randint(1, 3), segment_bytes=1024) as log:
        for _ in range(n_batches):
            events = []
            for _ in range(rng.randint(1, 8)):
                device = f"dev-{rng.randrange(6)}"
                seqs[device] = seqs.get(device, -1) + 1
                events.append(Event(device=device, kind=rng.choice(["line", "reading"]),
                                    ts=1_700_000_000_000 + rng.randrange(10**7), seq=seqs[device],
                                    payload={"text": "x" * rng.randrange(60), "value": rng.random()}))
            _append(log, events, stored)
        for _ in range(100):  # until a last segment holds two batches (the active-segment cases need one)
            if any(len(frames(segments(root, q)[-1].read_bytes())) >= 2 for q in range(log.partitions)):
                break
            device = f"dev-{rng.randrange(6)}"
            seqs[device] = seqs.get(device, -1) + 1
            _append(log, [Event(device=device, kind="line", ts=1_700_000_000_000, seq=seqs[device],
                                payload={})], stored)
    return stored


def _append(log: LocalLog, events: list[Event], stored: dict[tuple[int, int], Event]) -> None:
    result = log.append(events)
    for ev, pos in zip(events, result.positions):
        assert pos is not None
        stored[pos] = ev


def read_all(root: Path) -> tuple[set[Record], set[tuple[int, int]]]:
    """Every record of the log (placeholders apart) and the positions of the placeholders."""
    records, lost = set(), set()
    with LocalLog.open(root / "log", readonly=True) as log:
        for p, end in enumerate(log.end_offsets()):
            batch = log.read(p, 0, max_records=end)
            assert len(batch.events) == end
            for o, ev in enumerate(batch.events):
                if ev.kind == LOST_KIND:
                    lost.add((p, o))
                else:
                    records.add((p, o, _key(ev)))
    return records, lost


def _key(ev: Event) -> Any:
    return (ev.device, ev.kind, ev.ts, ev.seq, json.dumps(ev.payload, sort_keys=True))


def segments(root: Path, partition: int, log: str = "log") -> list[Path]:
    return sorted((root / log / f"p-{partition:04d}").glob("*.seg"))


def flip(path: Path, byte: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def pick_frame(rng: random.Random, root: Path, *, active: bool) -> tuple[int, Path, tuple[int, int, int, int]]:
    """A random batch of a sealed segment (or, ``active``, of the last segment but not its last batch)."""
    with LocalLog.open(root / "log", readonly=True) as log:
        n = log.partitions
    choices = []
    for p in range(n):
        segs = segments(root, p)
        pool = segs[-1:] if active else segs[:-1]
        for seg in pool:
            fr = frames(seg.read_bytes())
            for f in fr[:-1] if active else fr:
                choices.append((p, seg, f))
    assert choices, "the log is too small for this test"
    return rng.choice(choices)


def expected_records(stored: dict[tuple[int, int], Event]) -> set[Record]:
    return {(p, o, _key(ev)) for (p, o), ev in stored.items()}


@pytest.mark.parametrize("where", ["sealed-payload", "sealed-header", "sealed-anywhere", "active-middle"])
def test_one_flipped_bit_is_found_and_salvaged_exactly(tmp_path: Path, rng: random.Random, where: str) -> None:
    stored = write_log(tmp_path, rng)
    assert read_all(tmp_path) == (expected_records(stored), set())
    assert verify(tmp_path).intact
    p, seg, (pos, end, base, count) = pick_frame(rng, tmp_path, active=where == "active-middle")
    byte = {"sealed-payload": rng.randrange(pos + LAYOUT.size, end), "sealed-header": rng.randrange(pos, pos + 52),
            }.get(where, rng.randrange(pos, end))
    flip(seg, byte, rng.randrange(8))
    damaged = seg.read_bytes()
    in_header = byte < pos + LAYOUT.size
    print(f"flipped a bit of byte {byte} of {seg.name} (partition {p}), in the "
          f"{'header' if in_header else 'payload'} of the batch [{pos}, {end}) = offsets [{base}, {base + count})")

    if where == "active-middle":  # the writer appends to the last segment: opening checks it fully
        with pytest.raises(CorruptLogError, match="fluvial log salvage"):
            LocalLog.open(tmp_path / "log")
    else:  # a sealed segment: one flipped header bit is repaired from its checksum, a payload fails when read
        damaged_at = set() if in_header else {(p, o) for o in range(base, base + count)}
        opened = open_around_damage(tmp_path, stored, damaged_at, rng)
        assert [(d.byte_range, d.readable) for d in opened] == ([((pos, end), True)] if in_header else [])
    report = verify(tmp_path)
    [problem] = report.problems
    assert (problem.log, problem.partition, problem.file) == ("events", p, seg.name)
    assert (problem.byte_range, problem.offsets, problem.records) == ((pos, end), (base, base + count), count)
    assert problem.lost == (0 if in_header else count)  # one flipped header bit is repaired from its CRC
    assert problem.sealed == (where != "active-middle")

    result = salvage(tmp_path)
    [action] = result.actions
    assert action.lost == problem.lost and result.after is not None and result.after.intact
    lost = set() if in_header else {(p, o) for o in range(base, base + count)}
    records, placeholders = read_all(tmp_path)
    assert records == {r for r in expected_records(stored) if (r[0], r[1]) not in lost}
    assert placeholders == lost
    _check_quarantine(tmp_path, result, seg.name, damaged[pos:end] if lost else None, lost, p)

    again = salvage(tmp_path)  # idempotent
    assert again.actions == [] and again.quarantine is None
    assert len(list((tmp_path / QUARANTINE).iterdir())) == 1
    _writer_takes_appends(tmp_path, stored, lost)


def open_around_damage(root: Path, stored: dict[tuple[int, int], Event], damaged: set[tuple[int, int]],
                       rng: random.Random) -> list[Any]:
    """The writer opens a log damaged in sealed segments (as ``fluvial serve`` does): every record
    outside ``damaged`` is read, alone and in one read up to the damage, a read that reaches a
    damaged offset fails naming salvage, and appends go on at the end. Returns ``LocalLog.damaged``;
    the appended event is added to ``stored``."""
    with LocalLog.open(root / "log") as log:
        ends = log.end_offsets()
        assert ends == [max((o + 1 for q, o in stored if q == p), default=0) for p in range(log.partitions)]
        for (p, o), ev in sorted(stored.items()):
            if (p, o) in damaged:
                with pytest.raises(CorruptLogError, match="fluvial log salvage"):
                    log.read(p, o, max_records=1)
            else:
                assert log.read(p, o, max_records=1).events == [ev], (p, o)
        for p in range(log.partitions):  # the longest reads around the damage
            cut = min([o for q, o in damaged if q == p], default=ends[p])
            assert log.read(p, 0, stop_offset=cut).events == [stored[(p, o)] for o in range(cut)]
            after = max([o + 1 for q, o in damaged if q == p], default=0)
            assert log.read(p, after).events == [stored[(p, o)] for o in range(after, ends[p])]
        new = Event(device=f"after-{rng.randrange(10**6)}", kind="line", ts=1_700_000_000_000, seq=0, payload={})
        p = log.partition_for(new.device)
        assert log.append([new]).positions == [(p, ends[p])]
        assert log.read(p, ends[p]).events == [new]
        stored[(p, ends[p])] = new
        return list(log.damaged)


def _check_quarantine(root: Path, result: Any, seg_name: str, batch: bytes | None,
                      lost: set[tuple[int, int]], partition: int) -> None:
    qdir = result.quarantine
    report = json.loads((qdir / "report.json").read_text())
    assert report["status"] == "done" and report["records_lost"] == len(lost)
    [entry] = report["actions"]
    assert (entry["log"], entry["partition"], entry["file"]) == ("events", partition, seg_name)
    assert {(partition, o) for o in range(*entry["offsets"])} >= lost
    assert (qdir / "events" / f"p-{partition:04d}" / seg_name).exists()  # the segment as it was
    if batch is not None:
        assert (qdir / entry["moved_to"]).read_bytes() == batch
        assert not (root / "log" / f"p-{partition:04d}" / "dedup.snapshot").exists()  # it held the lost pairs


def _writer_takes_appends(root: Path, stored: dict[tuple[int, int], Event], lost: set[tuple[int, int]]) -> None:
    """The server's way of opening works; offsets carry on; lost records may be sent again."""
    with LocalLog.open(root / "log") as log:
        ends = log.end_offsets()
        kept = next(ev for pos, ev in stored.items() if pos not in lost)
        assert log.append([kept]).duplicates == 1
        if lost:
            p, o = min(lost)
            assert log.append([stored[(p, o)]]).positions == [(p, ends[p])]


def test_scribbled_bytes_lose_exactly_the_batches_they_touch(tmp_path: Path, rng: random.Random) -> None:
    stored = write_log(tmp_path, rng)
    p, seg, (pos, _, _, _) = pick_frame(rng, tmp_path, active=False)
    before = seg.read_bytes()
    start = rng.randrange(pos, len(before) - 8)
    stop = min(len(before), start + rng.randint(8, 400))
    after = bytearray(before)
    after[start:stop] = rng.randbytes(stop - start)
    seg.write_bytes(bytes(after))
    print(f"random bytes over [{start}, {stop}) of {seg.name} (partition {p})")
    touched = [f for f in frames(before) if before[f[0]:f[1]] != after[f[0]:f[1]]]
    bits = {f: sum(bin(a ^ b).count("1") for a, b in zip(before[f[0]:f[0] + 52], after[f[0]:f[0] + 52]))
            for f in touched}
    kept = {f for f in touched if bits[f] == 1 and before[f[0] + 52:f[1]] == after[f[0] + 52:f[1]]}
    lost = {(p, o) for f in touched if f not in kept for o in range(f[2], f[2] + f[3])}

    opened = open_around_damage(tmp_path, stored, lost, rng)  # a damaged sealed segment does not stop it
    headers = {f for f in touched if bits[f] > 0}  # frames whose header changed: stepped around on open
    print(f"{len(touched)} batches touched, {len(headers)} of them in the header, {len(kept)} kept")
    assert bool(opened) == bool(headers), opened  # opening saw every damaged header (payloads: when read)
    if headers:  # the first damage noted is the first damaged header
        assert min(d.byte_range[0] for d in opened if d.byte_range) == min(f[0] for f in headers)
    report = verify(tmp_path)
    assert report.problems, "damage went unnoticed"
    found = {(p, o) for pr in report.problems for o in range(pr.offsets[0], pr.offsets[1]) if pr.lost}
    assert found == lost
    result = salvage(tmp_path)
    assert result.lost == len(lost) and result.after is not None and result.after.intact
    records, placeholders = read_all(tmp_path)
    assert records == {r for r in expected_records(stored) if (r[0], r[1]) not in lost}
    assert placeholders == lost
    assert salvage(tmp_path).actions == []


def test_a_scrambled_header_in_a_sealed_segment_loses_only_its_batch(tmp_path: Path, rng: random.Random) -> None:
    """More than one bit: not repairable. The log opens anyway (for the writer and for readers),
    the batch's offsets are a hole up to the next intact header, everything else is read."""
    stored = write_log(tmp_path, rng)
    p, seg, (pos, end, base, count) = pick_frame(rng, tmp_path, active=False)
    data = bytearray(seg.read_bytes())
    last = end == len(data)
    where = rng.sample(range(pos, pos + LAYOUT.size), rng.randint(2, 12))
    for byte in where:
        data[byte] ^= rng.randrange(1, 256)
    seg.write_bytes(bytes(data))
    lost = {(p, o) for o in range(base, base + count)}
    print(f"scrambled bytes {sorted(where)} of the header of the batch [{pos}, {end}) of {seg.name} "
          f"(partition {p}), offsets [{base}, {base + count}){', the last of its segment' if last else ''}")
    with LocalLog.open(tmp_path / "log", readonly=True) as reader:  # the speed layer's way of opening
        [hole] = reader.damaged
        assert (hole.offsets, hole.readable, hole.byte_range[0]) == ((base, base + count), False, pos)
        assert hole.byte_range[1] == end  # up to the next intact header, or the end of the segment
        with pytest.raises(CorruptLogError, match=f"offsets \\[{base}, {base + count}\\) cannot be read"):
            reader.read(p, base)
    [damage] = open_around_damage(tmp_path, stored, lost, rng)
    assert damage == hole
    [problem] = verify(tmp_path).problems
    assert (problem.partition, problem.byte_range, problem.offsets) == (p, (pos, end), (base, base + count))
    assert problem.lost == count
    result = salvage(tmp_path)
    assert result.lost == count and result.after is not None and result.after.intact
    records, placeholders = read_all(tmp_path)
    assert records == {r for r in expected_records(stored) if (r[0], r[1]) not in lost}
    assert placeholders == lost


def test_a_missing_segment_file_keeps_its_offsets_as_placeholders(tmp_path: Path, rng: random.Random) -> None:
    stored = write_log(tmp_path, rng)
    p, seg, _ = pick_frame(rng, tmp_path, active=False)
    lost = {(p, o) for _, _, base, count in frames(seg.read_bytes()) for o in range(base, base + count)}
    first = seg == segments(tmp_path, p)[0]
    seg.unlink()
    print(f"deleted {seg.name} of partition {p}: offsets {min(lost)[1]}..{max(lost)[1]}")
    if not first:  # a hole of offsets that no file holds (without its first segment, a partition starts later)
        for snapshot in (tmp_path / "log").glob("p-*/dedup.snapshot"):
            snapshot.unlink()  # the writer rebuilds de-duplication around the hole
        [hole] = open_around_damage(tmp_path, stored, lost, rng)
        assert (hole.offsets, hole.byte_range) == ((min(lost)[1], max(lost)[1] + 1), None)
        with LocalLog.open(tmp_path / "log") as log:  # the pairs in the hole are unknown: accepted again
            p0, o0 = min(lost)
            assert log.append([stored[(p0, o0)]]).accepted == 1
            kept = next(ev for pos, ev in stored.items() if pos not in lost)
            assert log.append([kept]).duplicates == 1
            stored[(p0, log.end_offsets()[p0] - 1)] = stored[(p0, o0)]
    [problem] = verify(tmp_path).problems
    assert problem.offsets is not None and problem.byte_range is None
    assert {(p, o) for o in range(problem.offsets[0], problem.offsets[1])} == lost and problem.lost == len(lost)
    result = salvage(tmp_path)
    assert result.lost == len(lost) and result.after is not None and result.after.intact
    records, placeholders = read_all(tmp_path)
    assert records == {r for r in expected_records(stored) if (r[0], r[1]) not in lost}
    assert placeholders == lost and seg.exists()


def test_flipped_bit_in_an_index_file(tmp_path: Path, rng: random.Random) -> None:
    """The de-duplication snapshot (the only index file a partition keeps): found, moved aside, rebuilt."""
    stored = write_log(tmp_path, rng)
    snaps = sorted((tmp_path / "log").glob("p-*/dedup.snapshot"))
    snap = rng.choice(snaps)
    flip(snap, rng.randrange(snap.stat().st_size), rng.randrange(8))
    partition = int(snap.parent.name[2:])
    [problem] = verify(tmp_path).problems
    assert (problem.partition, problem.file, problem.lost) == (partition, "dedup.snapshot", 0)
    result = salvage(tmp_path)
    assert [a.lost for a in result.actions] == [0] and result.after is not None and result.after.intact
    assert read_all(tmp_path) == (expected_records(stored), set())
    with LocalLog.open(tmp_path / "log") as log:  # rebuilt from the log: every stored pair is a duplicate
        assert log.append(list(stored.values())).duplicates == len(stored)


def test_dead_letter_log_is_verified_and_salvaged(tmp_path: Path, rng: random.Random) -> None:
    letters = []
    with DeadLetterLog.open(tmp_path / "dead-letters", segment_bytes=1024) as dl:
        for i in range(rng.randint(20, 40)):
            batch = [DeadLetter(reason=f"bad {i}.{j}", source="http", line=j, raw=rng.randbytes(rng.randrange(50)),
                                at_ms=1_700_000_000_000 + i) for j in range(rng.randint(1, 4))]
            dl.append(batch)
            letters += batch
    seg_paths = sorted((tmp_path / "dead-letters" / "p-0000").glob("*.seg"))
    seg = rng.choice(seg_paths[:-1])
    pos, end, base, count = rng.choice(frames(seg.read_bytes()))
    flip(seg, rng.randrange(pos + 52, end), rng.randrange(8))
    [problem] = verify(tmp_path).problems
    assert (problem.log, problem.file, problem.offsets, problem.lost) == \
        ("dead-letters", seg.name, (base, base + count), count)
    assert salvage(tmp_path).lost == count
    with DeadLetterLog.open(tmp_path / "dead-letters", readonly=True) as dl:
        got = dl.read(0)
    assert len(got) == len(letters)
    assert [g for i, g in enumerate(got) if not base <= i < base + count] == \
        [d for i, d in enumerate(letters) if not base <= i < base + count]
    assert all(g.source == LOST_KIND for g in got[base:base + count])


def test_salvage_refuses_while_a_writer_holds_the_log(tmp_path: Path, rng: random.Random) -> None:
    write_log(tmp_path, rng)
    _, seg, (pos, end, _, _) = pick_frame(rng, tmp_path, active=False)
    flip(seg, rng.randrange(pos + 52, end), 0)
    damaged = seg.read_bytes()
    with LocalLog.open(tmp_path / "log"):  # a writer (sealed damage does not stop it opening)
        assert not verify(tmp_path).intact  # verify reads alongside it
        with pytest.raises(LogError, match="stop it first"):
            salvage(tmp_path)
        dry = salvage(tmp_path, dry_run=True)
        assert len(dry.actions) == 1 and dry.writer is not None
    assert seg.read_bytes() == damaged  # untouched
    assert not (tmp_path / QUARANTINE).exists()


def test_readers_of_all_kinds_skip_placeholders(tmp_path: Path, rng: random.Random) -> None:
    """``from_log()`` (every kind) on the batch runner: the records that survived, no placeholder."""
    import fluvial

    stored = write_log(tmp_path, rng, partitions=4)  # the workspace's default
    p, seg, (pos, end, base, count) = pick_frame(rng, tmp_path, active=False)
    flip(seg, rng.randrange(pos + 52, end), rng.randrange(8))
    salvage(tmp_path)
    pipeline = fluvial.Pipeline("all")
    with fluvial.open(tmp_path) as ws:
        got = pipeline.from_log().collect(ws.batch_runner())
    want = [ev for (q, o), ev in stored.items() if not (q == p and base <= o < base + count)]
    assert sorted(map(_key, got)) == sorted(map(_key, want))


# -- the command line ----------------------------------------------------------------------------

def run_cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str]:
    code = main(["--data-dir", str(root), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def damaged_active(tmp_path: Path, rng: random.Random) -> Iterator[tuple[Path, int, tuple[int, int]]]:
    """A log whose active segment has a damaged batch in the middle: the writer refuses to open it."""
    write_log(tmp_path, rng)
    p, seg, (pos, end, base, count) = pick_frame(rng, tmp_path, active=True)
    flip(seg, rng.randrange(pos + 52, end), rng.randrange(8))
    yield tmp_path, p, (base, base + count)


def test_cli_stats_verify_salvage(capsys: pytest.CaptureFixture[str],
                                  damaged_active: tuple[Path, int, tuple[int, int]]) -> None:
    root, p, offsets = damaged_active
    code, out = run_cli(capsys, root, "log", "stats")
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith(f"{p} "))
    assert "DAMAGED" in row and "run `fluvial log verify`" in row
    assert sum("DAMAGED" in line for line in out.splitlines()) == 1

    code, out = run_cli(capsys, root, "log", "verify", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["intact"] is False and doc["problems"] == 1
    [part] = [x for x in doc["partitions"] if x["problems"]]
    assert (part["partition"], part["problems"][0]["offsets"]) == (p, list(offsets))
    code, out = run_cli(capsys, root, "log", "verify")
    assert code == 1 and "DAMAGED: 1 problem(s)" in out and "fluvial log salvage" in out

    code, out = run_cli(capsys, root, "log", "salvage", "--dry-run")
    assert code == 0 and "dry run: 1 problem(s)" in out and not (root / QUARANTINE).exists()
    code, out = run_cli(capsys, root, "log", "salvage")
    assert code == 0 and f"{offsets[1] - offsets[0]} records lost" in out and "intact now" in out
    code, out = run_cli(capsys, root, "log", "salvage")
    assert code == 0 and "nothing to salvage" in out
    code, out = run_cli(capsys, root, "log", "verify")
    assert code == 0 and out.splitlines()[-1].startswith("intact")
    code, out = run_cli(capsys, root, "log", "stats")
    assert code == 0 and "DAMAGED" not in out and "salvaged before: 1 time(s)" in out


def test_cli_verify_and_salvage_follow_the_log_url(capsys: pytest.CaptureFixture[str],
                                                   damaged_active: tuple[Path, int, tuple[int, int]]) -> None:
    """With --log file://DIR the log is checked and repaired where the URL says (the quarantine
    stays in the data directory); a log that is not segment files is refused with the reason."""
    root, p, offsets = damaged_active
    elsewhere = root / "volume" / "events"
    elsewhere.parent.mkdir()
    (root / "log").rename(elsewhere)
    url = ["--log", f"file://{elsewhere}"]
    capsys.readouterr()   # the seed line
    code, out = run_cli(capsys, root, *url, "log", "verify", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["problems"] == 1
    [part] = [x for x in doc["partitions"] if x["problems"]]
    assert (part["partition"], part["problems"][0]["offsets"]) == (p, list(offsets))
    code, out = run_cli(capsys, root, *url, "log", "stats")
    assert code == 0 and sum("DAMAGED" in line for line in out.splitlines()) == 1, out
    code, out = run_cli(capsys, root, *url, "log", "salvage")
    assert code == 0 and f"{offsets[1] - offsets[0]} records lost" in out and "intact now" in out
    assert (root / QUARANTINE).is_dir() and not (root / "log").exists()
    code, out = run_cli(capsys, root, *url, "log", "verify")
    assert code == 0 and out.splitlines()[-1].startswith("intact")
    code, out = run_cli(capsys, root, "--log", f"parquet://{root}", "log", "verify")
    assert code == 1 and "checks the segment files of a file:// log" in out and "Traceback" not in out
