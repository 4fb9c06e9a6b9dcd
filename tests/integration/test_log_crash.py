"""Crash safety of LocalLog: torn tails are cut, acknowledged appends survive SIGKILL,
corruption away from the tail is reported."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluvial.errors import CorruptLogError
from fluvial.events import Event
from fluvial.log import LocalLog
from fluvial.log.segment import HEADER


def ev(device: str, seq: int) -> Event:
    return Event(device=device, kind="line", ts=seq * 10, seq=seq, payload={"text": f"n{seq}"})


def _build(path: Path) -> tuple[list[Event], int]:
    """Three batches in one partition; return the events and the size before the last batch."""
    with LocalLog.open(path, partitions=1) as log:
        log.append([ev("a", i) for i in range(5)])
        log.append([ev("a", i) for i in range(5, 8)])
    seg = path / "p-0000" / f"{0:020d}.seg"
    before_last = seg.stat().st_size
    with LocalLog.open(path) as log:
        log.append([ev("a", i) for i in range(8, 12)])
    return [ev("a", i) for i in range(12)], before_last


def test_truncation_at_every_byte_of_last_batch(tmp_path: Path) -> None:
    events, before_last = _build(tmp_path / "orig")
    seg_rel = Path("p-0000") / f"{0:020d}.seg"
    full = (tmp_path / "orig" / seg_rel).read_bytes()
    snapshot = (tmp_path / "orig" / "p-0000" / "dedup.snapshot").read_bytes()
    meta = (tmp_path / "orig" / "meta.json").read_bytes()
    assert len(full) > before_last + HEADER
    for cut in range(before_last, len(full)):
        d = tmp_path / f"cut{cut}"
        (d / "p-0000").mkdir(parents=True)
        (d / "meta.json").write_bytes(meta)
        (d / seg_rel).write_bytes(full[:cut])
        (d / "p-0000" / "dedup.snapshot").write_bytes(snapshot)  # covers offset 12: stale now
        with LocalLog.open(d) as log:
            assert log.end_offsets() == [8], cut
            assert (len(log.recovered) == 1) == (cut > before_last), cut
            assert log.read(0, 0).events == events[:8]
            # the cut seqs were never stored: they are accepted again, at the right offsets
            res = log.append([ev("a", i) for i in range(6, 12)])
            assert res.positions == [None, None] + [(0, o) for o in range(8, 12)], cut
        assert (d / seg_rel).stat().st_size == len(full), cut  # as if never interrupted
        with LocalLog.open(d) as log:
            assert log.recovered == [] and log.read(0, 0).events == events


def test_checksum_failure_of_last_batch_is_cut(tmp_path: Path) -> None:
    events, before_last = _build(tmp_path)
    seg = tmp_path / "p-0000" / f"{0:020d}.seg"
    data = bytearray(seg.read_bytes())
    data[-2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with LocalLog.open(tmp_path) as log:
        assert "checksum mismatch in the last batch" in log.recovered[0]
        assert log.read(0, 0).events == events[:8]
    assert seg.stat().st_size == before_last


@pytest.mark.parametrize("where", ["payload", "header"])
def test_flipped_byte_in_the_middle(tmp_path: Path, where: str) -> None:
    _, _before_last = _build(tmp_path)
    seg = tmp_path / "p-0000" / f"{0:020d}.seg"
    data = bytearray(seg.read_bytes())
    pos = HEADER + 10 if where == "payload" else 12
    data[pos] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=rf"{seg.name}: .* at byte 0"):
        LocalLog.open(tmp_path)
    with pytest.raises(CorruptLogError, match=rf"{seg.name}: .* at byte 0"):
        LocalLog.open(tmp_path, readonly=True)


def test_corruption_in_a_sealed_segment_detected_on_read(tmp_path: Path) -> None:
    with LocalLog.open(tmp_path, partitions=1, segment_bytes=1024) as log:
        for i in range(40):
            log.append([ev("a", i)])
    segs = sorted((tmp_path / "p-0000").glob("*.seg"))
    assert len(segs) > 1
    data = bytearray(segs[0].read_bytes())
    data[HEADER + 3] ^= 0x40
    segs[0].write_bytes(bytes(data))
    # opening verifies only the last segment fully; the read finds the damage
    with LocalLog.open(tmp_path) as log, pytest.raises(CorruptLogError, match=rf"{segs[0].name}.*byte 0"):
        log.read(0, 0)


_CHILD = """
import os, sys
from fluvial.log import LocalLog
from fluvial.events import Event
path, ack_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with LocalLog.open(path, partitions=3, fsync="batch", segment_bytes=8192) as log, \\
        open(ack_path, "a") as ack:
    while True:
        evs = [Event(device=f"d{(n + i) % 7}", kind="line", ts=n + i, seq=n + i,
                     payload={"text": "x" * ((n + i) % 50)}) for i in range(n % 9 + 1)]
        res = log.append(evs)
        ack.write("".join(f"{pos[0]} {pos[1]} {e.seq}\\n"
                          for e, pos in zip(evs, res.positions) if pos is not None))
        ack.flush()
        os.fsync(ack.fileno())
        n += len(evs)
"""


def _acks(path: Path) -> list[tuple[int, int, int]]:
    lines = path.read_text().split("\n")[:-1]  # a line cut by the kill has no newline
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in lines)]


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_keeps_every_acknowledged_batch(tmp_path: Path, round_: int) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    ack_path = tmp_path / "acks"
    ack_path.touch()
    start = 0
    for attempt in range(3):  # later writers start from a recovered log
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path / "log"), str(ack_path), str(start)]
        )
        size = ack_path.stat().st_size
        deadline = time.monotonic() + 60
        while ack_path.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the child has acknowledged something
        time.sleep(rng.random() * 0.5)
        child.send_signal(signal.SIGKILL)
        child.wait()
        acked = _acks(ack_path)
        assert len(acked) > 0
        with LocalLog.open(tmp_path / "log") as log:
            stored = {p: log.read(p, 0, max_records=10**7).events for p in range(3)}
            for p, off, seq in acked:
                assert off < len(stored[p]) and stored[p][off].seq == seq, (p, off, seq)
            all_seqs = [e.seq for p in range(3) for e in stored[p]]
            assert len(all_seqs) == len(set(all_seqs))  # no duplicate stored by a retry
            print(f"attempt {attempt}: acked {len(acked)}, stored {len(all_seqs)}, "
                  f"recovered {log.recovered}")
        # the next writer retries the last few acknowledged events: they must be duplicates
        start = max(0, max(seq for _, _, seq in acked) - 20)
