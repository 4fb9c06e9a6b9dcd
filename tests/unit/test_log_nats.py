"""What only the NATS log has: its URL, unreachable servers, foreign messages in its streams,
several writers appending at once, and a retried publish stored once (Nats-Msg-Id)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from fluvial.backends import check_log_url, open_log, spec_of
from fluvial.config import LogConfig
from fluvial.errors import ConfigError, CorruptLogError, LogError
from fluvial.events import Event
from fluvial.log.nats import NatsLog, parse_url
from logs import delete_streams, fresh_nats_url, nats_or_skip


def ev(device: str, seq: int) -> Event:
    return Event(device=device, kind="reading", ts=1_700_000_000_000 + seq, seq=seq, payload={"v": seq})


@pytest.fixture
def url() -> Iterator[str]:
    nats_or_skip()
    url = fresh_nats_url()
    yield url
    delete_streams(url)


@pytest.mark.parametrize(("bad", "words"), [
    ("nats://", "names no"),
    ("nats://127.0.0.1:4222", "names no log"),
    ("nats://127.0.0.1:4222/", "names no log"),
    ("nats://127.0.0.1:99999/x", "no valid port"),
    ("nats://127.0.0.1:port/x", "no valid port"),
    ("nats://a b:4222/x", "malformed server"),
    ("nats://h1:4222,,h2/x", "malformed server"),
    ("nats://user:pw@h1/x", "credentials"),
    ("nats://h1/x?replicas=0", "replicas must be a number from 1 to 5"),
    ("nats://h1/x?replicas=three", "replicas must be"),
    ("nats://h1/x?retention=1d", "unknown option 'retention'"),
    # hostile names: not a safe stream-name token
    ("nats://h1/a.b", "must be 1 to 64 letters"),
    ("nats://h1/a*", "must be 1 to 64 letters"),
    ("nats://h1/>", "must be 1 to 64 letters"),
    ("nats://h1/../etc", "must be 1 to 64 letters"),
    ("nats://h1/a b", "must be 1 to 64 letters"),
    ("nats://h1/" + "x" * 65, "must be 1 to 64 letters"),
    ("nats://h1/ümlaut", "must be 1 to 64 letters"),
])
def test_malformed_urls_are_refused_before_connecting(bad: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        check_log_url(bad)
    assert "--log" in str(info.value)
    with pytest.raises(ConfigError, match=words):
        open_log(bad)


def test_url_forms() -> None:
    a = parse_url("nats://h1,h2:4223,[::1]:4224/events_1?replicas=3")
    assert a.servers == ("nats://h1:4222", "nats://h2:4223", "nats://[::1]:4224")
    assert (a.name, a.replicas) == ("events_1", 3)
    assert (a.stream(2), a.subject(2)) == ("events_1-p0002", "fluvial.events_1.p0002")
    assert parse_url(a.url) == a


def test_unreachable_servers_name_the_servers_and_the_flag() -> None:
    t0 = time.monotonic()
    with pytest.raises(LogError) as info:
        open_log("nats://127.0.0.1:1,127.0.0.1:2/x")
    message = str(info.value)
    assert "--log" in message and "127.0.0.1:1" in message and "127.0.0.1:2" in message
    assert "nats-server" in message
    assert time.monotonic() - t0 < 15


def test_a_reader_of_a_missing_log_is_told_so(url: str) -> None:
    with pytest.raises(LogError, match="no fluvial log named"):
        open_log(url, readonly=True)


def test_spec_opens_the_same_log_read_only(url: str) -> None:
    with NatsLog.open(url, config=LogConfig(partitions=2)) as log:
        log.append([ev("d", 1)])
        spec = spec_of(log)
        assert spec.url == url and spec.readonly
        with spec.open() as reader:
            assert reader.partitions == 2 and sum(reader.end_offsets()) == 1


def _publish_foreign(url: str, partition: int, headers: dict[str, str] | None, body: bytes) -> int:
    import nats

    address = parse_url(url)

    async def run() -> int:
        nc = await nats.connect(list(address.servers))
        try:
            ack = await nc.jetstream().publish(address.subject(partition), body, headers=headers)
            return int(ack.seq)
        finally:
            await nc.close()

    return asyncio.run(run())


@pytest.mark.parametrize(("headers", "body", "why"), [
    (None, b"hello", "Fluvial-Batch"),
    ({"Fluvial-Batch": "1", "Fluvial-Offset": "1", "Fluvial-Count": "1", "Fluvial-Ts": "1 1 1 1",
      "Fluvial-Append-Ms": "0"}, b"\xc1not msgpack", "sequence 2"),
])
def test_a_message_that_is_not_a_fluvial_batch_is_corrupt_log(url: str, headers: dict[str, str] | None,
                                                               body: bytes, why: str) -> None:
    with NatsLog.open(url, config=LogConfig(partitions=1)) as log:
        log.append([ev("d", 0)])
        seq = _publish_foreign(url, 0, headers, body)
        assert seq == 2
        with pytest.raises(CorruptLogError) as info:
            log.read(0, 0)
        message = str(info.value)
        assert log.address.stream(0) in message and f"sequence {seq}" in message and why in message


def test_several_writers_store_each_pair_once_with_consecutive_offsets(url: str) -> None:
    """Four writers (separate connections) append overlapping retries of the same events at once."""
    NatsLog.open(url, config=LogConfig(partitions=2)).close()
    events = [ev(f"d{i % 5}", i) for i in range(400)]
    accepted: list[int] = []

    def write(k: int) -> None:
        with NatsLog.open(url) as log:
            n = 0
            for start in range(0, 400, 40):
                chunk = events[start:start + 40][k::2] + events[start:start + 40]  # overlapping retries
                n += log.append(chunk).accepted
            accepted.append(n)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(accepted) == 400
    with NatsLog.open(url, readonly=True) as log:
        stored = [e for p in range(2) for e in log.read(p, 0).events]
        assert sorted((e.device, e.seq) for e in stored) == sorted((e.device, e.seq) for e in events)
        assert [b.next_offset for b in (log.read(p, 0) for p in range(2))] == log.end_offsets()


def test_a_retry_through_another_writer_is_stored_once(url: str) -> None:
    """A batch retried through another ingest process: this writer's publish is refused (its tail
    is stale), it reads what the other stored and answers those events as duplicates."""
    with NatsLog.open(url, config=LogConfig(partitions=1)) as log:
        log.append([ev("d", 0)])
        with NatsLog.open(url) as other:
            other.append([ev("d", 1), ev("d", 2)])
        result = log.append([ev("d", 1), ev("d", 2), ev("d", 3)])
        assert (result.accepted, result.duplicates) == (1, 2)
        assert [e.seq for e in log.read(0, 0).events] == [0, 1, 2, 3]
        log.recover()  # what fluvial serve's log writer calls after a failure: a no-op here
        assert log.append([ev("d", 3), ev("d", 4)]).accepted == 1


def test_offsets_are_events_not_messages_across_message_splits(url: str) -> None:
    """An append larger than the server's max_payload is split into several messages."""
    with NatsLog.open(url, config=LogConfig(partitions=1)) as log:
        big = [Event(device="d", kind="k", ts=i, seq=i, payload={"pad": "x" * 1000}) for i in range(3000)]
        result = log.append(big)
        assert result.accepted == 3000 and result.positions[-1] == (0, 2999)
        assert [e.seq for e in log.read(0, 1234, max_records=3).events] == [1234, 1235, 1236]
        assert log.offset_for_time(0, 2500) == 2500


def test_a_publish_whose_ack_was_lost_is_dropped_by_its_msg_id(url: str) -> None:
    """A batch stored by a publish whose ack never came back (here: published aside, with the
    headers the writer makes): the writer's retry carries the same Nats-Msg-Id, JetStream answers
    "duplicate", and the writer reads the partition again and answers the events as duplicates."""
    import msgspec

    from fluvial.log.nats.frames import batch_headers

    with NatsLog.open(url, config=LogConfig(partitions=1)) as log:
        log.append([ev("d", 0)])
        lost = [ev("d", 1), ev("d", 2)]
        body = msgspec.msgpack.encode(lost)
        ts = [e.ts for e in lost]
        headers = batch_headers(0, body, first=1, count=2, lo=min(ts), hi=max(ts), run_max=max(ts),
                                run_min=ev("d", 0).ts, append_ms=0, last_seq=1)
        assert _publish_foreign(url, 0, headers, body) == 2
        result = log.append(lost)
        assert (result.accepted, result.duplicates) == (0, 2)
        assert [e.seq for e in log.read(0, 0).events] == [0, 1, 2]
        assert log.append([ev("d", 3)]).positions == [(0, 3)]
