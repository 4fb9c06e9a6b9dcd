"""De-duplication of device retries by ``(device, seq)``, and its snapshot file.

Per device the state is the largest ``seq`` stored plus the gaps (seqs not
yet seen) within a window of :data:`WINDOW` below it, kept as sorted
half-open intervals. A device that sends in order has no gaps, so its state
is two integers. A seq more than ``WINDOW`` below the device's max cannot be
checked any more: it is treated as new and stored (documented limitation; a
device that resets its counter must change its device id or stay within the
window).

The log is the truth: when an append fails, the log rebuilds the state from
its snapshot and the records after it, so a pair counts as stored only when
its event is in the log.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import zlib
from pathlib import Path

import msgspec

__all__ = ["WINDOW", "DedupState"]

WINDOW = 65_536
_MAGIC = b"FLD1"
_FORMAT = 1


class _Snapshot(msgspec.Struct, array_like=True):
    format: int
    offset: int
    devices: dict[str, tuple[int, list[int]]]  # device -> (max seq, flat [lo, hi, lo, hi, ...])


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Snapshot)


class DedupState:
    """Which ``(device, seq)`` pairs one partition has stored."""

    def __init__(self) -> None:
        self._max: dict[str, int] = {}
        self._gaps: dict[str, list[int]] = {}  # flat sorted [lo0, hi0, lo1, hi1, ...]

    def top(self, device: str) -> int | None:
        """The largest seq stored for ``device`` (None if none)."""
        return self._max.get(device)

    def add(self, device: str, seq: int) -> bool:
        """Record ``(device, seq)``; return False if it was already stored.

        ``seq`` must be within ``0 .. MAX_SEQ`` (:mod:`fluvial.log.limits`): the log checks.
        """
        top = self._max.get(device)
        if top is not None and seq == top + 1:  # in order: the common case
            self._max[device] = seq
            gaps = self._gaps[device]
            if gaps and gaps[1] <= seq - WINDOW:
                self._prune(gaps, seq - WINDOW)
            return True
        if top is None:
            self._max[device] = seq
            self._gaps[device] = [seq - WINDOW, seq]
            return True
        if seq > top:
            gaps = self._gaps[device]
            if seq > top + 1:
                gaps += [max(top + 1, seq - WINDOW), seq]
            floor = seq - WINDOW
            if gaps and gaps[1] <= floor:  # a whole gap fell out of the window (a gap partly
                self._prune(gaps, floor)    # below it is harmless: seqs there count as beyond it)
            self._max[device] = seq
            return True
        if seq == top:
            return False
        if seq < top - WINDOW:
            return True  # beyond the window: cannot tell, store it
        gaps = self._gaps[device]
        i = bisect.bisect_right(gaps, seq)
        if i % 2 == 0:
            return False  # not inside a gap: seen before
        lo, hi = gaps[i - 1], gaps[i]
        repl = ([lo, seq] if lo < seq else []) + ([seq + 1, hi] if seq + 1 < hi else [])
        gaps[i - 1 : i + 1] = repl
        return True

    @staticmethod
    def _prune(gaps: list[int], floor: int) -> None:
        i = 0
        while i < len(gaps) and gaps[i + 1] <= floor:
            i += 2
        del gaps[:i]
        if gaps and gaps[0] < floor:
            gaps[0] = floor

    def __len__(self) -> int:
        return len(self._max)

    def save(self, path: Path, offset: int) -> None:
        """Write the state, covering records before ``offset``, atomically and durably."""
        snap = _Snapshot(
            _FORMAT, offset, {d: (m, self._gaps[d]) for d, m in self._max.items()}
        )
        body = _enc.encode(snap)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk: leave no half-written file behind
                tmp.unlink()
            raise

    @classmethod
    def load(cls, path: Path) -> tuple[DedupState, int] | None:
        """Return (state, offset covered), or None if the file is missing or damaged."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        body = data[8:]
        if data[:4] != _MAGIC or int.from_bytes(data[4:8], "little") != zlib.crc32(body):
            return None
        try:
            snap = _dec.decode(body)
        except msgspec.DecodeError:
            return None
        if snap.format != _FORMAT:
            return None
        state = cls()
        for device, (top, gaps) in snap.devices.items():
            state._max[device] = top
            state._gaps[device] = list(gaps)
        return state, snap.offset
