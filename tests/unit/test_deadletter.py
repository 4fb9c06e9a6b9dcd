"""DeadLetterLog: append-only, survives reopen, shares the segment format."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluvial.errors import LogError
from fluvial.log import DeadLetter, DeadLetterLog


def dl(i: int) -> DeadLetter:
    return DeadLetter(reason=f"$.ts: expected int, got str #{i}", source="http",
                      line=i if i % 2 else None, raw=b"\xff\x00{" + bytes([i % 256]), at_ms=1000 + i)


def test_append_read_count_reopen(tmp_path: Path) -> None:
    letters = [dl(i) for i in range(300)]
    with DeadLetterLog.open(tmp_path, segment_bytes=2048) as log:
        assert log.append(letters[:100]) == 0
        assert log.append([]) == 100
        for i in range(100, 300, 7):
            assert log.append(letters[i : i + 7]) == i
        assert log.count() == 300
        assert log.read() == letters
        assert log.read(150, max_records=3) == letters[150:153]
        assert log.read(300) == []
    assert len(list((tmp_path / "p-0000").glob("*.seg"))) > 1
    with DeadLetterLog.open(tmp_path) as log:
        assert log.count() == 300 and log.read(299) == letters[299:]
        log.append([dl(7)])
    with DeadLetterLog.open(tmp_path, readonly=True) as log:
        assert log.count() == 301
        with pytest.raises(LogError, match="readonly"):
            log.append([dl(1)])


def test_single_writer(tmp_path: Path) -> None:
    with DeadLetterLog.open(tmp_path), pytest.raises(LogError, match="already open for writing"):
        DeadLetterLog.open(tmp_path)


def test_torn_tail_cut(tmp_path: Path) -> None:
    with DeadLetterLog.open(tmp_path) as log:
        log.append([dl(1)])
        log.append([dl(2), dl(3)])
    seg = next((tmp_path / "p-0000").glob("*.seg"))
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 5)
    with DeadLetterLog.open(tmp_path) as log:
        assert log.recovered and log.count() == 1 and log.read() == [dl(1)]
