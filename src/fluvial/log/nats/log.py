"""``NatsLog``: the :class:`~fluvial.log.base.Log` protocol over NATS JetStream streams.

Opening reads (a writer: creates) the log's meta stream -- one message, the
partition count, published with ``Nats-Expected-Last-Sequence: 0`` so that two
writers creating the same log agree -- then the partition streams. Reads are
:class:`~fluvial.log.nats.reader.StreamReader`'s, appends
:class:`~fluvial.log.nats.append.Appender`'s; every call runs on the
connection's loop thread (:mod:`fluvial.log.nats.connection`) under one mutex.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from fluvial.config import DEFAULT_LOG, LogConfig
from fluvial.errors import ConfigError, CorruptLogError, LogError, LogUnreachable
from fluvial.events.envelope import Event
from fluvial.log.base import AppendResult, PartitionStats, RecordBatch
from fluvial.log.encode import check_envelope
from fluvial.log.limits import check_events
from fluvial.log.nats.address import NatsAddress, parse_url
from fluvial.log.nats.append import Appender
from fluvial.log.nats.connection import Connection
from fluvial.log.nats.reader import StreamReader, Tail

if TYPE_CHECKING:
    from fluvial.backends import LogSpec

T = TypeVar("T")
__all__ = ["NatsLog"]

DEFAULT_PARTITIONS = 4
READ_LIMIT = 1 << 20
_FORMAT = 1


class NatsLog:
    """A partitioned event log in NATS JetStream streams (see :mod:`fluvial.log.nats`).

    Open it with :meth:`open`. Any number of processes may append and read at once.

    Attributes:
        address: Servers, name and replicas (from the URL).
        partitions: Number of partitions (one stream each).
        readonly: Appends are refused.
    """

    def __init__(self, address: NatsAddress, conn: Connection, partitions: int, *, readonly: bool,
                 config: LogConfig) -> None:
        self.address = address
        self.partitions = partitions
        self.readonly = readonly
        self._config = config
        self._conn = conn
        self._reader = StreamReader(conn.js, address)
        self._mutex = threading.RLock()
        self._closed = False
        self._appender = None if readonly else Appender(conn, self._reader, partitions)

    @classmethod
    def open(cls, url: str, *, config: LogConfig = DEFAULT_LOG, readonly: bool = False) -> NatsLog:
        """Open (a writer: create) the log at ``url`` (``nats://HOST:PORT[,...]/NAME[?replicas=N]``).

        Raises:
            ConfigError: A malformed URL, or ``config.partitions`` differs from the log's count.
            LogError: No server answers, or (``readonly``) there is no log of that name.
        """
        address = parse_url(url)
        conn = Connection(address.servers, address.url)
        try:
            count = conn.call(_open_meta(conn, address, config.partitions, create=not readonly))
            if not readonly:
                conn.call(_create_streams(conn, address, count))
            deadline = time.monotonic() + OPEN_PATIENCE_S
            while True:
                try:   # a writer reads every partition's tail and (device, seq) pairs
                    return cls(address, conn, count, readonly=readonly, config=config)
                except LogUnreachable:   # a stream's leader being elected (a node just died)
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        except BaseException:
            conn.close()
            raise

    @property
    def url(self) -> str:
        return self.address.url

    def spec(self) -> LogSpec:
        """How another process (a Spark executor, a worker) opens this log, read only."""
        from fluvial.backends import LogSpec

        return LogSpec(self.url, self._config, readonly=True)

    # -- writing --------------------------------------------------------------

    def partition_for(self, device: str) -> int:
        """Return ``crc32(device) % partitions`` (as LocalLog: stable across processes and runs)."""
        import zlib

        return zlib.crc32(device.encode()) % self.partitions

    def next_seq(self, device: str) -> int:
        """One more than the largest seq stored for ``device`` (0 for a new device)."""
        with self._mutex:
            top = self._writer().top(device)
        return 0 if top is None else top + 1

    def append(self, events: Sequence[Event], *, decoded: bool = False) -> AppendResult:
        """Append events, one or more messages per partition touched, de-duplicated by ``(device, seq)``.

        When it returns, every accepted event is acknowledged by JetStream (stored on the
        stream's replicas). A retried event, also one another process stored, is a duplicate.

        Raises:
            ValidationError: An event has a wrong envelope or a value the log cannot store;
                nothing was published.
            LogError: Readonly or closed, or the servers did not acknowledge in time: the
                outcome is unknown for the events without a position; append them again.
        """
        with self._mutex:
            writer = self._writer()
            if not decoded:
                for i, ev in enumerate(events):
                    check_envelope(i, ev)
                check_events(events)
            if not events:
                return AppendResult(accepted=0, duplicates=0, positions=[])
            return writer.append(events)

    def recover(self) -> None:
        """Read again, from the streams, the partitions a failed append left uncertain (what
        ``fluvial serve``'s log writer calls before taking events again; appends also do it
        by themselves). A no-op when nothing failed.

        Raises:
            LogError: The servers still do not answer (call again later).
        """
        with self._mutex:
            self._writer().catch_up()

    def _writer(self) -> Appender:
        self._check_open()
        if self._appender is None:
            raise LogError(f"the NATS log {self.url} is open readonly; open it without readonly=True")
        return self._appender

    # -- reading --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"the NATS log {self.url} is closed")

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise LogError(f"partition {partition} does not exist; the log {self.url} has partitions "
                           f"0..{self.partitions - 1}")

    def read(self, partition: int, start_offset: int, *, max_records: int | None = None,
             stop_offset: int | None = None) -> RecordBatch:
        """Read events of one partition from ``start_offset`` (before ``stop_offset``); at most
        ``max_records`` (:data:`READ_LIMIT` when None); an empty batch at the end.

        Raises:
            LogError: No such partition, ``start_offset`` outside the partition, or no server.
            CorruptLogError: A message on the way is not a fluvial batch.
        """
        with self._mutex:
            self._check_open()
            self._check_partition(partition)
            limit = READ_LIMIT if max_records is None else max(0, max_records)
            stop = start_offset + limit if stop_offset is None else min(stop_offset, start_offset + limit)
            events, append_ms = self._conn.call(self._read(partition, start_offset, stop))
        return RecordBatch(partition=partition, start_offset=start_offset, events=events, append_ms=append_ms)

    async def _read(self, partition: int, start: int, stop: int) -> tuple[list[Event], list[int]]:
        tail = await self._reader.tail(partition)
        if not tail.start <= start <= tail.end:
            raise LogError(f"offset {start} is outside partition {partition} [{tail.start}, {tail.end}]")
        return await self._reader.read(partition, tail, start, stop)

    def _tails(self) -> list[Tail]:
        with self._mutex:
            self._check_open()
            return self._conn.call(_gather([self._reader.tail(p) for p in range(self.partitions)]))

    def start_offsets(self) -> list[int]:
        """The first offset held by each partition (0 unless the streams' limits dropped old messages)."""
        return [t.start for t in self._tails()]

    def end_offsets(self) -> list[int]:
        """The offset after the last event of each partition."""
        return [t.end for t in self._tails()]

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """The first offset whose running max event time is ``>= ts_ms``; the end offset if none
        (a binary search over the messages' running max, then one message decoded)."""
        with self._mutex:
            self._check_open()
            self._check_partition(partition)
            return self._conn.call(self._reader.offset_for_time(partition, ts_ms))

    def stats(self) -> list[PartitionStats]:
        """Offsets, records, event-time range and stored bytes of every partition (the time range
        is the running min/max over every event ever appended, also ones the limits dropped)."""
        return [PartitionStats(partition=p, start_offset=t.start, end_offset=t.end, records=t.end - t.start,
                               min_ts=t.last.run_min if t.last else None,
                               max_ts=t.last.run_max if t.last else None, bytes=t.bytes)
                for p, t in enumerate(self._tails())]

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (every acknowledged append is in JetStream already). Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._appender is not None:
                self._appender.close()
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writer"
        return f"NatsLog({self.url!r}, partitions={self.partitions}, {mode})"


async def _gather(coros: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*coros))


async def _ensure_stream(conn: Connection, name: str, subject: str, replicas: int) -> None:
    """Create stream ``name`` (one subject, file storage) unless it exists (kept as it is)."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await conn.js.stream_info(name)
        return
    except NotFoundError:
        pass
    await conn.js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE,
                                          num_replicas=replicas))


OPEN_PATIENCE_S = 30.0
"""How long opening a log waits out a cluster that cannot answer yet: its JetStream meta leader
or a new stream's leader being elected (a fresh cluster, a node just killed), or another
process creating the same log at the same moment."""


_TRANSIENT_API_ERRORS = {
    10008,   # JetStream system temporarily unavailable
    # "error creating store for stream": nats-server 2.9.10 removes the account's streams
    # directory when its last stream is deleted, and a stream created at that moment fails
    # ("mkdir .../streams/NAME: no such file or directory"); created again, it is made
    10049,
}


async def _patiently(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, tried again with backoff for up to :data:`OPEN_PATIENCE_S` while the cluster
    answers that it cannot yet (time-outs, no responders, JetStream temporarily unavailable)."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import APIError, ServiceUnavailableError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + OPEN_PATIENCE_S
    delay = 0.2
    while True:
        try:
            return await attempt()
        except (TimeoutError, NatsTimeout, NoRespondersError, ServiceUnavailableError, APIError) as exc:
            transient = not isinstance(exc, APIError) or isinstance(exc, ServiceUnavailableError) or \
                exc.err_code in _TRANSIENT_API_ERRORS
            if not transient or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)


async def _meta_message(conn: Connection, address: NatsAddress, asked: int | None, *, create: bool) -> Any:
    """Message 1 of the meta stream (a writer first creates the stream and publishes it)."""
    from nats.js.errors import APIError, NotFoundError

    stream = address.meta_stream
    try:
        return await conn.js.get_msg(stream, 1)
    except NotFoundError:
        if not create:
            raise LogError(f"--log {address.url}: no fluvial log named {address.name!r} on "
                           f"{', '.join(address.servers)} (stream {stream!r} is missing); a writer "
                           "creates it (fluvial ingest --log URL, or open it without readonly)") from None
    await _ensure_stream(conn, stream, address.meta_subject, address.replicas)
    meta = json.dumps({"format": _FORMAT, "partitions": asked or DEFAULT_PARTITIONS}).encode()
    try:  # the first writer's count wins; the others read it
        await conn.js.publish(address.meta_subject, meta, stream=stream,
                              headers={"Nats-Expected-Last-Sequence": "0"})
    except APIError as exc:
        if exc.err_code != 10071:
            raise
    return await conn.js.get_msg(stream, 1)


async def _open_meta(conn: Connection, address: NatsAddress, asked: int | None, *, create: bool) -> int:
    """The log's partition count, from its meta stream (a writer creates it with ``asked``)."""
    from nats.errors import Error

    stream = address.meta_stream
    try:
        msg = await _patiently(lambda: _meta_message(conn, address, asked, create=create))
    except (TimeoutError, Error) as exc:
        raise LogError(f"--log {address.url}: cannot read the log's meta stream {stream!r} "
                       f"({type(exc).__name__} {exc}); is JetStream enabled (nats-server -js)?") from None
    try:
        data = json.loads(msg.data or b"")
        count, fmt = int(data["partitions"]), data["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptLogError(f"NATS stream {stream!r}, sequence 1: not a fluvial log's meta ({exc})") from None
    if fmt != _FORMAT:
        raise LogError(f"NATS stream {stream!r}: unsupported log format {fmt!r} (this is format {_FORMAT})")
    if asked is not None and asked != count:
        raise ConfigError(f"--log {address.url} has {count} partitions, but partitions={asked} was asked; "
                          "the count is fixed at creation (omit it, or use another NAME)")
    return count


async def _create_streams(conn: Connection, address: NatsAddress, partitions: int) -> None:
    from nats.errors import Error

    try:
        await asyncio.gather(*(_patiently(lambda p=p: _ensure_stream(conn, address.stream(p), address.subject(p),  # type: ignore[misc]
                                                                     address.replicas))
                               for p in range(partitions)))
    except (TimeoutError, Error) as exc:
        raise LogError(f"--log {address.url}: cannot create the partition streams ({type(exc).__name__} "
                       f"{exc}); with replicas={address.replicas} the cluster needs that many servers") from None
