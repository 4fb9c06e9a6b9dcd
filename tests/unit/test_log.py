"""The log protocol on every backend (``log_backend``: file, nats): round trips, partitioning,
dedup, time index, readers in other processes; and LocalLog's own: rolls, snapshots, locking."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

import msgspec
import pytest

from fluvial.errors import ConfigError, LogError, ValidationError
from fluvial.events import Event
from fluvial.log import AppendResult, LocalLog, Log
from fluvial.log.segment import encode_batch
from logs import LogBackend


def ev(device: str, seq: int, ts: int | None = None, **payload: object) -> Event:
    return Event(device=device, kind="reading", ts=seq if ts is None else ts, seq=seq,
                 payload=payload or {"kind": "t", "value": float(seq)})


def read_all(log: Log, p: int) -> list[Event]:
    out: list[Event] = []
    off = 0
    while True:
        b = log.read(p, off, max_records=37)
        if not b.events:
            return out
        assert b.start_offset == off and len(b.append_ms) == len(b.events)
        out += b.events
        off = b.next_offset


def test_protocol_and_partitioning(log_backend: LogBackend) -> None:
    with log_backend.open(partitions=3) as log:
        assert isinstance(log, Log)
        for d in ["a", "sensor-17", "ü"]:
            assert log.partition_for(d) == zlib.crc32(d.encode()) % 3
    # stable across processes (not Python's salted hash)
    code = (f"from fluvial.backends import open_log; l = open_log({log_backend.url!r}, "
            "readonly=True); print(l.partition_for('sensor-17')); l.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == zlib.crc32(b"sensor-17") % 3


def test_round_trip_across_partitions_and_rolls(log_backend: LogBackend, tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    devices = [f"dev-{i}" for i in range(20)]
    seqs = dict.fromkeys(devices, 0)
    expected: dict[int, list[Event]] = {p: [] for p in range(4)}
    with log_backend.open(partitions=4, segment_bytes=4096) as log:
        for _ in range(60):
            batch = []
            for _ in range(rng.randrange(1, 30)):
                d = rng.choice(devices)
                seqs[d] += 1
                batch.append(ev(d, seqs[d], ts=rng.randrange(10_000), note="x" * rng.randrange(50)))
            res = log.append(batch)
            assert res.accepted == len(batch) and res.duplicates == 0
            for e, pos in zip(batch, res.positions):
                assert pos is not None
                p, off = pos
                assert p == zlib.crc32(e.device.encode()) % 4
                assert off == len(expected[p])
                expected[p].append(e)
        assert log.end_offsets() == [len(expected[p]) for p in range(4)]
        assert log.start_offsets() == [0, 0, 0, 0]
        for p in range(4):
            assert read_all(log, p) == expected[p]
        stats = log.stats()
        for p, st in enumerate(stats):
            assert st.records == st.end_offset == len(expected[p])
            assert st.min_ts == min(e.ts for e in expected[p])
            assert st.max_ts == max(e.ts for e in expected[p])
            assert st.bytes > 0
        if log_backend.name == "file":
            where = tmp_path / "log"
            segs = sorted((where / "p-0000").glob("*.seg"))
            assert len(segs) > 2
            assert all(s.stat().st_size <= 4096 for s in segs[:-1])
            for p, st in enumerate(stats):
                assert st.bytes == sum(f.stat().st_size for f in (where / f"p-{p:04d}").glob("*.seg"))
    with log_backend.open(readonly=True) as log:
        for p in range(4):
            assert read_all(log, p) == expected[p]


def test_read_window(log_backend: LogBackend) -> None:
    with log_backend.open(partitions=1) as log:
        log.append([ev("d", i) for i in range(10)])
        log.append([ev("d", i) for i in range(10, 20)])
        b = log.read(0, 5, stop_offset=13)
        assert [e.seq for e in b.events] == list(range(5, 13)) and b.next_offset == 13
        assert [e.seq for e in log.read(0, 18, max_records=5).events] == [18, 19]
        assert log.read(0, 20).events == []
        with pytest.raises(LogError, match="outside partition 0"):
            log.read(0, 21)
        with pytest.raises(LogError, match="partition 1 does not exist"):
            log.read(1, 0)


def test_dedup_within_call_across_calls_and_after_reopen(log_backend: LogBackend, tmp_path: Path) -> None:
    with log_backend.open(partitions=2) as log:
        r = log.append([ev("a", 1), ev("a", 2), ev("a", 1), ev("b", 1)])
        assert (r.accepted, r.duplicates) == (3, 1)
        assert r.positions[2] is None
        r = log.append([ev("a", 2), ev("a", 5), ev("a", 3)])
        assert (r.accepted, r.duplicates) == (2, 1)
        assert r.positions[0] is None
    with log_backend.open() as log:  # file: snapshot written at close; nats: rebuilt from the streams
        r = log.append([ev("a", 1), ev("a", 4), ev("a", 5), ev("b", 1), ev("b", 2)])
        assert [p is not None for p in r.positions] == [False, True, False, False, True]
    if log_backend.name == "file":  # snapshot removed: rebuilt from segments
        for p in range(2):
            (tmp_path / "log" / f"p-{p:04d}" / "dedup.snapshot").unlink()
    with log_backend.open() as log:
        r = log.append([ev("a", s) for s in range(7)] + [ev("b", 3)])
        assert [p is not None for p in r.positions] == [True, False, False, False, False, False,
                                                        True, True]
        assert sum(log.end_offsets()) == 10


def test_stale_snapshot_is_not_trusted(tmp_path: Path) -> None:
    with LocalLog.open(tmp_path, partitions=1) as log:
        log.append([ev("a", 1)])
    snap = (tmp_path / "p-0000" / "dedup.snapshot").read_bytes()
    with LocalLog.open(tmp_path) as log:
        log.append([ev("a", 2)])
    (tmp_path / "p-0000" / "dedup.snapshot").write_bytes(snap[:-1] + b"\x00")  # bad checksum
    with LocalLog.open(tmp_path) as log:
        assert log.append([ev("a", 2), ev("a", 3)]).accepted == 1


def test_dedup_window_limit_documented(log_backend: LogBackend) -> None:
    with log_backend.open(partitions=1) as log:
        log.append([ev("a", 5), ev("a", 100_000)])
        # seq 5 is more than 65,536 below the max: can no longer be checked, stored again
        assert log.append([ev("a", 5), ev("a", 99_999), ev("a", 99_999)]).accepted == 2


def test_offset_for_time_matches_brute_force(log_backend: LogBackend) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    with log_backend.open(partitions=2, segment_bytes=4096) as log:
        seq = 0
        for _ in range(40):
            batch = []
            for _ in range(rng.randrange(1, 12)):
                seq += 1
                batch.append(ev(rng.choice("abcdef"), seq, ts=rng.randrange(1000)))
            log.append(batch)
        for p in range(2):
            stored = read_all(log, p)
            for t in [-1, 0, *rng.sample(range(1001), 60), 999, 1000, 5000]:
                running, want = None, len(stored)
                for off, e in enumerate(stored):
                    running = e.ts if running is None else max(running, e.ts)
                    if running >= t:
                        want = off
                        break
                assert log.offset_for_time(p, t) == want, (p, t)
    with log_backend.open(readonly=True) as log:
        assert log.offset_for_time(0, 10**9) == log.end_offsets()[0]


def test_partition_count_mismatch(log_backend: LogBackend) -> None:
    log_backend.open(partitions=3).close()
    with pytest.raises(ConfigError, match="has 3 partitions, but partitions=4"):
        log_backend.open(partitions=4)
    with log_backend.open() as log:
        assert log.partitions == 3


def test_single_writer_lock(tmp_path: Path) -> None:
    with LocalLog.open(tmp_path) as log:
        with pytest.raises(LogError, match=rf"already open for writing \(pid {os.getpid()}\)"):
            LocalLog.open(tmp_path)
        log.append([ev("a", 1)])
    LocalLog.open(tmp_path).close()  # released on close


def test_readonly_sees_new_appends_from_another_process(log_backend: LogBackend) -> None:
    log_backend.open(partitions=1).close()
    reader = log_backend.open(readonly=True)
    assert reader.end_offsets() == [0]
    code = (
        "from fluvial.backends import open_log; from fluvial.events import Event\n"
        f"with open_log({log_backend.url!r}) as log:\n"
        "    for i in range(50):\n"
        "        log.append([Event(device='d', kind='k', ts=i, seq=i, payload={'p': 'x' * 40})])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert reader.end_offsets() == [50]
    assert [e.seq for e in reader.read(0, 0).events][:50] == list(range(50))
    with pytest.raises(LogError, match="readonly"):
        reader.append([ev("a", 1)])
    reader.close()


def test_readonly_never_sees_partial_batch(tmp_path: Path) -> None:
    with LocalLog.open(tmp_path, partitions=1) as log:
        log.append([ev("a", 1), ev("a", 2)])
    with LocalLog.open(tmp_path, readonly=True) as reader:
        seg = tmp_path / "p-0000" / f"{0:020d}.seg"
        data = encode_batch(2, 1, 0, 3, 3, msgspec.msgpack.encode([ev("a", 3)]))
        with open(seg, "ab") as f:  # a writer half-way through its next batch
            f.write(data[: len(data) - 3])
        assert reader.end_offsets() == [2]
        assert len(reader.read(0, 0).events) == 2


def test_append_checks_envelope_and_closed(log_backend: LogBackend) -> None:
    log = log_backend.open(partitions=1)
    bad = Event(device="d", kind="k", ts="1", seq=0, payload={})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"\$\[1\]\.ts: expected int, got str"):
        log.append([ev("d", 1), bad])
    assert log.end_offsets() == [0]
    log.close()
    log.close()
    with pytest.raises(LogError, match="closed"):
        log.append([ev("a", 1)])


@pytest.mark.parametrize("fsync", ["batch", "interval", "never"])
def test_fsync_policies(tmp_path: Path, fsync: str) -> None:
    with LocalLog.open(tmp_path, partitions=2, fsync=fsync, fsync_interval_ms=0) as log:  # type: ignore[arg-type]
        assert isinstance(log.append([ev("a", 1), ev("b", 1)]), AppendResult)
    with LocalLog.open(tmp_path) as log:
        assert sum(log.end_offsets()) == 2
    with pytest.raises(ConfigError, match="fsync must be"):
        LocalLog.open(tmp_path, fsync="always")  # type: ignore[arg-type]


def test_throughput(tmp_path: Path) -> None:
    """200k events appended and read back (decoded) whole; prints the rates (no bound on them: tests
    never assert timings, bench/ measures)."""
    n, chunk = 200_000, 10_000
    evs = [Event(device=f"dev-{i % 1000}", kind="reading", ts=1_700_000_000_000 + i, seq=i,
                 payload={"kind": "temp", "value": i * 0.5}) for i in range(n)]
    with LocalLog.open(tmp_path, partitions=4, fsync="batch") as log:
        t0 = time.perf_counter()
        for i in range(0, n, chunk):
            log.append(evs[i : i + chunk])
        t_append = time.perf_counter() - t0
        assert sum(log.end_offsets()) == n
    with LocalLog.open(tmp_path, readonly=True) as log:
        t0 = time.perf_counter()
        total = 0
        for p in range(4):
            off = 0
            while b := log.read(p, off).events:
                total += len(b)
                off += len(b)
        t_read = time.perf_counter() - t0
    assert total == n
    print(f"append {n / t_append:,.0f} events/s ({t_append:.2f}s, fsync=batch, {chunk}/call); "
          f"read+decode {n / t_read:,.0f} events/s ({t_read:.2f}s for {n:,})")


def test_the_default_config_opens_a_log_of_any_partition_count(tmp_path: Path) -> None:
    """A log made with [log] partitions = 2 opens for every reader that does not ask for a count
    (fluvial run, query, the server's batch child); asking for another count is still refused."""
    import fluvial
    from fluvial.config import LogConfig
    from fluvial.errors import ConfigError

    LocalLog.open(tmp_path / "log", partitions=2).close()
    with fluvial.open(tmp_path) as ws:
        assert ws.log.partitions == 2
    with pytest.raises(ConfigError, match="has 2 partitions, but partitions=3 was asked"), \
            fluvial.open(tmp_path, log_config=LogConfig(partitions=3)) as ws:
        ws.log  # noqa: B018 (opening it is the test)
    with LocalLog.open(tmp_path / "new") as log:
        assert log.partitions == 4
