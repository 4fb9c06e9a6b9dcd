"""De-duplication of device retries by ``(device, seq)``: the per-partition state, its
snapshot file, and :class:`Deduplicator`, the layer a log backend composes to apply it.

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
import logging
import os
import zlib
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from fluvial.errors import ValidationError
from fluvial.events.envelope import Event
from fluvial.log.limits import MAX_SEQ, event_problem

__all__ = ["WINDOW", "DedupState", "Deduplicator", "PairSource"]

WINDOW = 65_536
_MAGIC = b"FLD1"
_FORMAT = 1


class _Snapshot(msgspec.Struct, array_like=True):
    format: int
    offset: int
    devices: dict[str, tuple[int, list[int]]]  # device -> (max seq, flat [lo, hi, lo, hi, ...])


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Snapshot)
_logger = logging.getLogger("fluvial.log")


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


class PairSource(Protocol):
    """What :class:`Deduplicator` reads of a log backend: offsets and ``(device, seq)`` pairs."""

    def offsets(self, partition: int) -> tuple[int, int]:
        """``(start offset, end offset)`` of ``partition``: its first record, and the offset after its last."""
        ...

    def pairs(self, partition: int, start_offset: int, stop_offset: int) -> Iterable[tuple[str, int]]:
        """The ``(device, seq)`` of each record of ``partition`` in ``[start_offset, stop_offset)``,
        in offset order; a record the backend cannot read (damage) is skipped, and says so."""
        ...


class Deduplicator:
    """The ``(device, seq)`` de-duplication of a partitioned log, over any backend.

    It holds one :class:`DedupState` per partition and keeps it equal to what the
    log holds: the log is the truth, the state a cache of it that the records
    alone determine. A backend gives it a :class:`PairSource` (its offsets and the
    pairs of its records) and one snapshot file per partition, then:

    1. :meth:`load` when it opens for writing: each partition's state is its snapshot
       plus the records after the offset the snapshot covers; a missing or damaged
       snapshot, one covering more than the partition holds, or one of a partition
       in ``distrust`` (its torn tail was cut on open) is ignored and the whole
       partition replayed. A snapshot that did not cover the whole partition is
       written again.
    2. :meth:`new_events` on each append: it answers which events are new and records
       them as stored *before* the backend writes them. The backend then writes them
       all, or calls :meth:`rebuild` for the partitions concerned.
    3. :meth:`rebuild` after an append that failed (or wrote nothing): the state of
       those partitions is built again from their snapshot and records, so what the
       failed append recorded is forgotten and whatever of it reached the log
       completely is known again. A pair counts as stored only when its event is in
       the log.
    4. :meth:`save` whenever a snapshot is worth writing (LocalLog: when a partition
       rolls to a new segment, and at close): it covers the records up to the end offset.

    :meth:`rebuild` and :meth:`save` are idempotent: neither changes what the log
    holds, and calling either again gives the same state and the same snapshot.
    Snapshots only shorten the replay: losing one (a full disk makes :meth:`save` a
    warning) costs time at the next load, never correctness. What a replay cannot
    read (damaged records) is unknown: a device that sends one of those pairs again
    is stored again, as is a seq more than :data:`WINDOW` below its device's max.

    Example:
        >>> import tempfile
        >>> class Records:  # a backend's partition 0: two records at offsets 0 and 1
        ...     def offsets(self, partition): return 0, 2
        ...     def pairs(self, partition, start, stop): return [("d1", 1), ("d1", 2)][start:stop]
        >>> dedup = Deduplicator.load(Records(), [Path(tempfile.mkdtemp()) / "dedup.snapshot"])
        >>> evs = [Event(device="d1", kind="k", ts=0, seq=s, payload={}) for s in (2, 3, 3)]
        >>> {p: idx for p, (_, idx) in dedup.new_events(evs, [0, 0, 0]).items()}
        {0: [1]}
    """

    def __init__(self, source: PairSource, snapshots: Sequence[Path]) -> None:
        """Empty states (nothing loaded: see :meth:`load`) for ``len(snapshots)`` partitions."""
        self._source = source
        self._snapshots = list(snapshots)
        self._states = [DedupState() for _ in self._snapshots]

    @classmethod
    def load(cls, source: PairSource, snapshots: Sequence[Path], *,
             distrust: Collection[int] = ()) -> Deduplicator:
        """The states of partitions ``0 .. len(snapshots) - 1``, from their snapshots and records.

        Args:
            source: The log's records.
            snapshots: Each partition's snapshot file (none: a reader keeps no state).
            distrust: Partitions whose snapshot is not used (the backend cut their torn tail).

        Raises:
            OSError, LogError: Reading the records failed (as ``source`` raises them).
        """
        dedup = cls(source, snapshots)
        for p in range(len(dedup._states)):
            covered, _ = dedup._replay(p, trust=p not in distrust)
            if covered is None or covered != dedup._source.offsets(p)[1]:
                dedup.save(p)
        return dedup

    @property
    def partitions(self) -> int:
        """The number of partitions with a state."""
        return len(self._states)

    def top(self, partition: int, device: str) -> int | None:
        """The largest seq stored for ``device`` in ``partition`` (None if none)."""
        return self._states[partition].top(device)

    def new_events(
        self, events: Sequence[Event], partitions: Sequence[int]
    ) -> dict[int, tuple[list[Event], list[int]]]:
        """The events not stored yet, with their indexes, by partition; records them as stored.

        An event whose ``(device, seq)`` is stored already, or appears earlier in
        ``events``, is left out. Partitions with no new event are not in the result.

        Args:
            events: An append's events.
            partitions: The partition of each event (``partitions[i]`` for ``events[i]``).

        Raises:
            ValidationError: A seq outside ``0 .. MAX_SEQ`` (``$[i].seq``). Events before it
                were recorded: :meth:`rebuild` every partition.
        """
        n, states, top = len(self._states), self._states, MAX_SEQ
        by_partition: list[list[Event]] = [[] for _ in range(n)]
        index: list[list[int]] = [[] for _ in range(n)]
        for i, ev in enumerate(events):
            device, seq = ev.device, ev.seq
            if not 0 <= seq <= top:  # the state holds seqs of this range only
                raise _unstorable(events, i)
            p = partitions[i]
            if states[p].add(device, seq):
                by_partition[p].append(ev)
                index[p].append(i)
        return {p: (by_partition[p], index[p]) for p in range(n) if by_partition[p]}

    def rebuild(self, partitions: Iterable[int]) -> None:
        """Make the state of ``partitions`` what their snapshot and the records after it say.

        Run when an append failed after recording events (rare): what it recorded is
        forgotten, and what its write put in the log completely is known again. A
        snapshot that did not cover the whole partition is written again.

        Raises:
            OSError, LogError: Reading the records failed; the states are then unreliable
                (the backend must refuse appends until a rebuild succeeds).
        """
        for p in partitions:
            _, start = self._replay(p, trust=True)
            if start != self._source.offsets(p)[1]:
                self.save(p)

    def save(self, partition: int) -> None:
        """Write ``partition``'s snapshot, covering its records up to its end offset.

        A failure (a full disk) is only a warning: a missing or older snapshot just
        makes the next load replay more of the log.
        """
        path = self._snapshots[partition]
        try:
            self._states[partition].save(path, self._source.offsets(partition)[1])
        except OSError as exc:
            _logger.warning("could not write the de-duplication snapshot of %s (%s); the next open "
                            "rebuilds it from the log", path.parent, exc)

    def _replay(self, p: int, *, trust: bool) -> tuple[int | None, int]:
        """Set partition ``p``'s state from its snapshot (if ``trust``) and the records after it.

        Returns (the offset the snapshot read covers, or None if none was read; where the replay started).
        """
        first, end = self._source.offsets(p)
        loaded = DedupState.load(self._snapshots[p])
        covered = None if loaded is None else loaded[1]
        if loaded is not None and loaded[1] <= end and trust:
            state, start = loaded
        else:
            state, start = DedupState(), first
        add = state.add
        for device, seq in self._source.pairs(p, start, end):
            add(device, seq)
        self._states[p] = state
        return covered, start


def _unstorable(events: Sequence[Event], i: int) -> ValidationError:
    """The error naming what of ``events[i]`` (whose seq is out of range) the log cannot store."""
    path, reason = event_problem(events[i]) or (".seq", f"must be within 0 .. {MAX_SEQ}")
    return ValidationError(f"$[{i}]{path}", reason)
