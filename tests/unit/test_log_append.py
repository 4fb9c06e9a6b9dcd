"""The append path: what the log refuses, what a failed write leaves, how the writer recovers.

* values the log cannot store (``ts``/``seq``/payload integers beyond 64 bits, deep
  nesting, lone surrogates) are a :class:`ValidationError` naming the path, and
  leave no trace in the de-duplication state;
* a disk that fills (``ENOSPC``, partial writes) or fails an fsync (``EIO``) at random
  moments: afterwards the log holds every acknowledged event exactly once, and the
  de-duplication state says "stored" exactly for what the log holds (brute force
  over every pair ever sent);
* the server's log writer keeps a bad request from failing its group, and recovers
  from a full disk by itself;
* hypothesis: any envelope or payload either appends or raises ValidationError.

Randomised tests print their seed (``FLUVIAL_TEST_SEED=<n>`` reproduces one).
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluvial.errors import LogError, ValidationError
from fluvial.events import Event, SchemaRegistry
from fluvial.log import DeadLetter, DeadLetterLog, LocalLog
from fluvial.log.dedup import WINDOW, DedupState
from fluvial.log.limits import MAX_DEPTH, MAX_SEQ, MAX_TS_MS, MIN_TS_MS
from fluvial.server.ingest import IngestError, parse_body
from fluvial.server.writer import LogUnavailable, LogWriter
from logs import LogBackend

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))


@pytest.fixture(autouse=True)
def _print_seed() -> None:
    print(f"seed {SEED} (FLUVIAL_TEST_SEED={SEED} reproduces it)")


def ev(device: str, seq: int, **payload: Any) -> Event:
    """A reading whose payload is a function of (device, seq) unless given."""
    return Event(device=device, kind="reading", ts=1_700_000_000_000 + seq, seq=seq,
                 payload=payload or {"kind": "t", "value": float(seq), "who": device})


def contents(log: Any) -> list[Event]:
    return [e for p in range(log.partitions) for e in log.read(p, 0).events]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


class FaultyDisk:
    """``os.write``/``os.fsync`` on files under ``root`` act like a disk with ``free`` bytes left
    (a write past it writes what fits, the next raises ENOSPC; ``None``: unlimited) whose next
    ``fsync_errors`` fsyncs fail with EIO. Other files are untouched."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = str(root)
        self.free: int | None = None
        self.fsync_errors = 0
        real_write, real_fsync = os.write, os.fsync

        def write(fd: int, data: Any) -> int:
            if self.free is None or not self._ours(fd):
                return real_write(fd, data)
            if self.free <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real_write(fd, memoryview(data)[: self.free])
            self.free -= n
            return n

        def fsync(fd: int) -> None:
            if self.fsync_errors > 0 and self._ours(fd):
                self.fsync_errors -= 1
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False


# -- values the log cannot store ---------------------------------------------------------------

UNSTORABLE = [
    # id, envelope fields of event 1, the path of the problem, a word of the reason
    ("ts-2**63", {"ts": 2**63}, "$[1].ts", "outside the event times"),
    ("ts-below-int64", {"ts": -(2**63) - 1}, "$[1].ts", "outside the event times"),
    ("ts-2**70", {"ts": 2**70}, "$[1].ts", "outside the event times"),
    ("seq-2**63", {"seq": 2**63}, "$[1].seq", "signed 64-bit"),
    ("seq-2**70", {"seq": 2**70}, "$[1].seq", "signed 64-bit"),
    ("payload-uint64+1", {"payload": {"a": {"b": 2**64}}}, "$[1].payload.a.b", "does not fit in 64 bits"),
    ("payload-below-int64", {"payload": {"a": [0, -(2**63) - 1]}}, "$[1].payload.a[1]", "does not fit in 64 bits"),
    ("payload-huge-key", {"payload": {"a": {2**65: 1}}}, "$[1].payload.a[36893488147419103232]", "key"),
    ("payload-deep", {"payload": {"x": nested(MAX_DEPTH)}}, "$[1].payload.x", "nested deeper than"),
    ("payload-surrogate", {"payload": {"s": "a\ud800"}}, "$[1].payload.s", "surrogate"),
    ("device-surrogate", {"device": "dev\udc00"}, "$[1].device", "surrogate"),
    ("payload-object", {"payload": {"o": object()}}, "$[1].payload.o", "cannot be stored"),
]


# decoded=True (msgspec-decoded events, as ingest appends them) trusts the caller's depth check
# (ingest makes it), and msgspec never decodes a lone surrogate: those two are checked mode only
_MODES = [pytest.param(*c[1:], decoded, id=f"{c[0]}-{'decoded' if decoded else 'checked'}")
          for c in UNSTORABLE for decoded in (False, True)
          if not decoded or c[0] not in ("payload-deep", "device-surrogate")]


@pytest.mark.parametrize(("fields", "path", "reason", "decoded"), _MODES)
def test_unstorable_event_is_refused_by_path_and_records_nothing(
        log_backend: LogBackend, fields: dict[str, Any], path: str, reason: str, decoded: bool) -> None:
    with log_backend.open(partitions=2) as log:
        good = ev("d", 0)
        bad = msgspec.structs.replace(ev("d", 1), **fields)
        with pytest.raises(ValidationError) as info:
            log.append([good, bad], decoded=decoded)
        assert info.value.path.startswith(path) and reason in info.value.reason, info.value
        assert contents(log) == []  # nothing written
        # nothing recorded: the same (device, seq) pairs with storable values are new, and the log writes
        assert log.append([good, ev("d", 1)]).accepted == 2
        assert log_backend.name != "file" or log.failure is None


def test_largest_storable_values_round_trip(log_backend: LogBackend) -> None:
    edge = Event(device="edge", kind="reading", ts=MAX_TS_MS, seq=MAX_SEQ,
                 payload={"hi": 2**64 - 1, "lo": -(2**63), "deep": nested(MAX_DEPTH - 2)})
    with log_backend.open(partitions=1) as log:
        assert log.append([edge, Event(device="edge", kind="reading", ts=MIN_TS_MS, seq=0, payload={})]).accepted == 2
        assert log.append([edge]).duplicates == 1
    with log_backend.open() as log:
        assert contents(log)[0] == edge
        assert log.append([edge]).duplicates == 1


def test_refused_huge_seq_keeps_dedup_on_and_close_writes_snapshots(tmp_path: Path) -> None:
    """Defect 3: a refused seq of 2**70 once switched de-duplication off for its device
    (a later retry stored twice) and made close() fail before writing the snapshots."""
    with LocalLog.open(tmp_path, partitions=2) as log:
        assert log.append([ev("d", 5)], decoded=True).accepted == 1
        with pytest.raises(ValidationError, match=r"\$\[0\]\.seq"):
            log.append([msgspec.structs.replace(ev("d", 0), seq=2**70)], decoded=True)
        assert log.append([ev("d", 6)], decoded=True).accepted == 1
        assert log.append([ev("d", 6), ev("d", 5)], decoded=True).duplicates == 2
        p, ends = log.partition_for("d"), log.end_offsets()
    snapshot = DedupState.load(tmp_path / f"p-{p:04d}" / "dedup.snapshot")
    assert snapshot is not None and snapshot[1] == ends[p] and snapshot[0].top("d") == 6
    with LocalLog.open(tmp_path) as log:
        assert log.append([ev("d", 6)]).duplicates == 1
        assert sorted(e.seq for e in contents(log)) == [5, 6]


# -- a disk that fills, or fails an fsync, at random moments ------------------------------------


def test_full_disk_and_failed_fsyncs_lose_nothing_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(SEED)
    disk = FaultyDisk(tmp_path, monkeypatch)
    log = LocalLog.open(tmp_path / "log", partitions=3, segment_bytes=4096)
    devices = [f"dev-{i}" for i in range(6)]
    next_seq = dict.fromkeys(devices, 0)
    acked: set[tuple[str, int]] = set()
    sent: set[tuple[str, int]] = set()
    failures = recoveries = 0
    for _ in range(300):
        if log.failure is not None:
            if rng.random() < 0.5:  # space returns (or not yet)
                disk.free = None if rng.random() < 0.7 else rng.randrange(0, 3000)
            try:
                log.recover()
                recoveries += 1
            except LogError:
                continue
        if disk.free is None and rng.random() < 0.15:  # the disk fills up
            disk.free = rng.randrange(0, 3000)
        if rng.random() < 0.05:
            disk.fsync_errors = 1
        batch = []
        for _ in range(rng.randrange(1, 30)):
            d = rng.choice(devices)
            if next_seq[d] and rng.random() < 0.3:  # a retry of something sent before
                batch.append(ev(d, rng.randrange(next_seq[d])))
            else:
                batch.append(ev(d, next_seq[d]))
                next_seq[d] += 1
        sent |= {(e.device, e.seq) for e in batch}
        try:
            log.append(batch)
        except LogError:
            failures += 1
            continue
        acked |= {(e.device, e.seq) for e in batch}
    disk.free, disk.fsync_errors = None, 0
    log.recover()
    log.close()
    print(f"{failures} failed appends, {recoveries} recoveries, {len(acked)} acknowledged of {len(sent)} sent")
    assert failures >= 5 and recoveries >= 5  # the faults did happen

    with LocalLog.open(tmp_path / "log") as log:
        stored = Counter((e.device, e.seq) for e in contents(log))
        assert not [pair for pair, n in stored.items() if n > 1], "stored twice"
        assert acked <= set(stored), f"acknowledged but lost: {sorted(acked - set(stored))[:10]}"
        assert set(stored) <= sent
        assert all(e.payload == ev(e.device, e.seq).payload for e in contents(log))
        # the dedup state says "stored" for exactly what is in the log
        pairs = sorted(sent)
        result = log.append([ev(d, s) for d, s in pairs])
        assert [pos is None for pos in result.positions] == [pair in stored for pair in pairs]


def test_failed_log_refuses_appends_until_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FaultyDisk(tmp_path, monkeypatch)
    log = LocalLog.open(tmp_path / "log", partitions=2)
    log.append([ev("a", 0)])
    disk.free = 10
    with pytest.raises(LogError, match="No space left on device"):
        log.append([ev("a", 1), ev("b", 1)])
    assert log.failure is not None
    with pytest.raises(LogError, match="call recover"):
        log.append([ev("c", 0)])
    with pytest.raises(LogError, match="still cannot be written"):
        log.recover()  # the probe finds the disk still full
    disk.free = None
    log.recover()
    assert log.append([ev("a", 1), ev("b", 1), ev("a", 0)]).duplicates == 1
    log.close()


# -- the server's log writer ---------------------------------------------------------------------


class Gate:
    """A log whose first append waits for ``open()``: requests submitted meanwhile form one group."""

    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self.entered, self.released = threading.Event(), threading.Event()
        self.groups: list[int] = []

    def append(self, events: list[Event], *, decoded: bool = False) -> Any:
        self.entered.set()
        self.released.wait(10)
        self.groups.append(len(events))
        return self.log.append(events, decoded=decoded)

    def recover(self) -> None:
        self.log.recover()


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[tuple[LocalLog, DeadLetterLog]]:
    log, letters = LocalLog.open(tmp_path / "log", partitions=2), DeadLetterLog.open(tmp_path / "dl")
    yield log, letters
    log.close()
    letters.close()


def test_a_bad_request_does_not_fail_the_honest_ones_of_its_group(logs: tuple[LocalLog, DeadLetterLog]) -> None:
    log, letters = logs
    gate = Gate(log)
    writer = LogWriter(gate, letters)
    first = writer.submit([ev("h0", 0)])
    assert gate.entered.wait(10)
    honest_a = writer.submit([ev("h1", 0), ev("h1", 1)])
    bad = writer.submit([ev("x", 0), ev("x", 1, a=2**70)])  # what ingest would refuse, handed on anyway
    honest_b = writer.submit([ev("h2", 0)])
    gate.released.set()
    assert first.result(10).accepted == 1
    assert (honest_a.result(10).accepted, honest_b.result(10).accepted) == (2, 1)
    with pytest.raises(ValidationError, match=r"\$\[1\]\.payload\.a"):
        bad.result(10)
    assert gate.groups[:2] == [1, 5], "the three requests were not one group"
    assert writer.failed is None
    # nothing of the bad request was recorded: its storable event is new, the honest ones are duplicates
    again = writer.submit([ev("x", 0), ev("h1", 0), ev("h2", 0)]).result(10)
    assert (again.accepted, again.duplicates) == (1, 2)
    writer.close()
    assert sorted((e.device, e.seq) for e in contents(log)) == [
        ("h0", 0), ("h1", 0), ("h1", 1), ("h2", 0), ("x", 0)]


def test_writer_answers_507_while_the_disk_is_full_and_recovers_by_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FaultyDisk(tmp_path, monkeypatch)
    log, letters = LocalLog.open(tmp_path / "log", partitions=2), DeadLetterLog.open(tmp_path / "dl")
    writer = LogWriter(log, letters, retry_min_s=0.01, retry_max_s=0.05)
    try:
        assert writer.submit([ev("a", 0)]).result(10).accepted == 1
        disk.free = 0
        with pytest.raises(LogUnavailable) as info:
            writer.submit([ev("a", 1)]).result(10)
        assert info.value.disk_full and info.value.retry_after_s >= 1
        assert "disk is full" in info.value.reason and "send them again" in info.value.reason
        failed = writer.failed
        assert failed is not None and "No space left on device (ENOSPC)" in failed
        assert str(tmp_path) not in failed and str(tmp_path) not in info.value.reason  # no paths
        with pytest.raises(LogUnavailable):  # refused at once while failing, dead letters too
            writer.submit([], [DeadLetter(reason="r", source="s", line=None, raw=b"x", at_ms=0)]).result(10)
        time.sleep(0.2)  # several recovery attempts fail meanwhile
        assert writer.failed is not None
        disk.free = None  # space returns
        deadline = time.monotonic() + 10
        while writer.failed is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.failed is None, "the writer did not recover by itself"
        result = writer.submit([ev("a", 1), ev("a", 0)]).result(10)
        assert (result.accepted, result.duplicates) == (1, 1)
        assert writer.failures >= 1 and writer.recoveries >= 1
    finally:
        writer.close()
        log.close()
        letters.close()


# -- hypothesis: any envelope, any payload ---------------------------------------------------------

_ints = st.one_of(st.integers(), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]))
_leaves = st.one_of(st.none(), st.booleans(), _ints, st.floats(), st.text(max_size=8), st.binary(max_size=8))
_values = st.recursive(_leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                       st.dictionaries(st.text(max_size=4), kids, max_size=4)),
                       max_leaves=20)
_payloads = st.one_of(st.dictionaries(st.text(max_size=4), _values, max_size=5),
                      st.builds(lambda d: {"deep": nested(d)}, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3)))
_events = st.builds(
    lambda device, kind, ts, seq, payload: Event(device=device, kind=kind, ts=ts, seq=seq, payload=payload),
    device=st.one_of(st.sampled_from(["a", "b", "c"]), st.text(max_size=3), st.integers()),
    kind=st.one_of(st.just("reading"), st.text(max_size=3)),
    ts=st.one_of(_ints, st.floats(), st.text(max_size=2)),
    seq=st.one_of(st.integers(-3, 20), _ints, st.booleans()),
    payload=st.one_of(_payloads, st.lists(st.integers(), max_size=2)),
)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_events, max_size=6), min_size=1, max_size=4))
def test_fuzz_append_appends_or_raises_validation_error(batches: list[list[Event]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalLog.open(tmp, partitions=2) as log:
        for batch in batches:
            before = Counter((e.device, e.seq) for e in contents(log))
            try:
                result = log.append(batch)
            except ValidationError:
                assert Counter((e.device, e.seq) for e in contents(log)) == before  # nothing written
                continue
            assert log.failure is None
            for event, pos in zip(batch, result.positions):
                if pos is not None:
                    assert log.read(pos[0], pos[1], max_records=1).events == [event]
        stored = Counter((e.device, e.seq) for e in contents(log))
        largest: dict[str, int] = {}
        for d, s in stored:
            largest[d] = max(largest.get(d, s), s)

        def in_window(d: str, s: int) -> bool:
            """De-duplication's documented promise: exact within WINDOW below a device's largest
            seq; a retry further below it may be stored again (log/dedup.py)."""
            return d not in largest or s > largest[d] - WINDOW

        assert all(n == 1 for (d, s), n in stored.items() if in_window(d, s)), stored
        # the dedup state matches the log: every stored pair is a duplicate, nothing else is
        probes = [(d, s) for batch in batches for e in batch
                  if type(d := e.device) is str and d and type(s := e.seq) is int and 0 <= s <= MAX_SEQ]
        for d, s in set(probes):
            if not in_window(d, s):
                continue
            result = log.append([Event(device=d, kind="k", ts=0, seq=s, payload={})])
            assert (result.duplicates == 1) == ((d, s) in stored)


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=3), kids, max_size=3)),
    max_leaves=15)
_envelopes = st.fixed_dictionaries(
    {"device": st.sampled_from(["a", "b"]), "kind": st.sampled_from(["line", "reading"]), "ts": _ints,
     "seq": st.one_of(st.integers(0, 10), _ints),
     "payload": st.one_of(st.fixed_dictionaries({"text": st.text(max_size=5)}, optional={"x": _json_values}),
                          st.fixed_dictionaries({"kind": st.text(max_size=3), "value": st.floats(-1e9, 1e9)},
                                                optional={"x": _json_values}),
                          st.builds(lambda d: {"text": "deep", "x": nested(d)},
                                    st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3)))})


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.tuples(st.lists(_envelopes, max_size=6), st.booleans()), min_size=1, max_size=3))
def test_fuzz_ingest_then_append_never_fails(bodies: list[tuple[list[dict[str, Any]], bool]]) -> None:
    """What ingest accepts the log stores: parse_body refuses (per event) whatever it could not."""
    registry = SchemaRegistry.with_builtins()
    with tempfile.TemporaryDirectory() as tmp, LocalLog.open(tmp, partitions=2) as log:
        for items, as_msgpack in bodies:
            ctype = "application/msgpack" if as_msgpack else "application/json"
            try:
                body = msgspec.msgpack.encode(items) if as_msgpack else msgspec.json.encode(items)
            except OverflowError:  # an integer MessagePack cannot carry at all: JSON can
                body, ctype = msgspec.json.encode(items), "application/json"
            try:
                parsed = parse_body(body, ctype, registry, max_events=100)
            except IngestError as exc:
                assert exc.status in (400, 422), exc
                continue
            log.append(parsed.events, decoded=True)  # never raises
            for _, reason in parsed.rejected:
                assert reason.startswith("$"), reason
            assert sorted(parsed.indices + [i for i, _ in parsed.rejected]) == list(range(len(items)))


def test_a_refused_item_is_always_kept_in_some_bytes() -> None:
    from fluvial.server.ingest import raw_bytes

    assert raw_bytes({"device": "d", "n": 2**70}) == b'{"device":"d","n":1180591620717411303424}'
    assert raw_bytes({b"k": 1}) == b'{"aw==":1}'          # JSON, bytes key as base64
    assert raw_bytes({(1, 2): 2**70}).startswith(b"{(1, 2): ")  # neither JSON nor MessagePack: its repr
