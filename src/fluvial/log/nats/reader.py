"""Reading partition streams (coroutines, run on the connection's loop thread).

:class:`StreamReader` answers the reads of the ``Log`` protocol for a log on
JetStream: the tail of a partition (its end offset and the running event times),
the message that holds an offset (binary search over stream sequences, by the
headers of :mod:`fluvial.log.nats.frames`), consecutive events from an offset,
and the first offset of a point in event time. Messages are fetched from the
stream leader (``STREAM.MSG.GET``: a follower could be behind), several at a time.
A partition stream that does not exist yet is an empty partition.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fluvial.errors import LogError, LogUnavailable
from fluvial.events.envelope import Event
from fluvial.log.nats.address import NatsAddress
from fluvial.log.nats.frames import Frame, decode_events, parse_frame

if TYPE_CHECKING:
    from nats.js import JetStreamContext

__all__ = ["PREFETCH", "StreamReader", "Tail"]

PREFETCH = 16          # messages fetched at once by a read
_FRAME_CACHE = 8192    # headers kept per log (binary searches touch the same few)


@dataclass(frozen=True)
class Tail:
    """The end of a partition: the last message, or ``last`` None when the stream holds none.

    Attributes:
        first_seq, last_seq: The stream's first and last sequence (0, 0 if it never held one).
        start: The first offset held (``first_seq``'s first event).
        last: The last message's frame.
        bytes: Bytes the stream stores.
    """

    first_seq: int
    last_seq: int
    start: int
    last: Frame | None
    bytes: int

    @property
    def end(self) -> int:
        """The offset after the last event."""
        return self.last.end if self.last is not None else self.start


class StreamReader:
    """Reads the partition streams of one log through a JetStream context."""

    def __init__(self, js: JetStreamContext, address: NatsAddress) -> None:
        self.js = js
        self.address = address
        self._frames: dict[tuple[int, int], Frame] = {}
        self._decoded: dict[int, tuple[Frame, list[Event]]] = {}  # partition -> the last message decoded

    def _errors(self) -> tuple[type[BaseException], ...]:
        from nats.errors import Error

        return (Error, asyncio.TimeoutError)

    async def tail(self, partition: int) -> Tail:
        """Where ``partition`` ends now (the last message's frame, read from the leader)."""
        from nats.js.errors import NotFoundError

        stream = self.address.stream(partition)
        try:
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return Tail(0, 0, 0, None, 0)
        except self._errors() as exc:
            raise self.unavailable(partition, exc) from None
        state = info.state
        if not state.messages:
            return Tail(state.first_seq, state.last_seq, 0, None, 0)   # never written (no purge)
        first = await self.frame(partition, state.first_seq)
        last = await self.frame(partition, state.last_seq)
        return Tail(state.first_seq, state.last_seq, first.first, last, state.bytes)

    async def message(self, partition: int, seq: int) -> tuple[Frame, bytes]:
        """The frame and body of the message at ``seq``."""
        stream = self.address.stream(partition)
        try:
            msg = await self.js.get_msg(stream, seq)
        except self._errors() as exc:
            raise self.unavailable(partition, exc, seq) from None
        frame = parse_frame(stream, seq, msg.headers)
        self._remember(partition, frame)
        return frame, msg.data or b""

    async def frame(self, partition: int, seq: int) -> Frame:
        """The frame of the message at ``seq`` (cached: messages never change)."""
        cached = self._frames.get((partition, seq))
        if cached is not None:
            return cached
        frame, _ = await self.message(partition, seq)
        return frame

    def _remember(self, partition: int, frame: Frame) -> None:
        if len(self._frames) >= _FRAME_CACHE:
            self._frames.clear()
        self._frames[(partition, frame.seq)] = frame

    async def locate(self, partition: int, tail: Tail, offset: int) -> int:
        """The sequence of the message holding ``offset`` (``tail.start <= offset < tail.end``)."""
        lo, hi = tail.first_seq, tail.last_seq
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (await self.frame(partition, mid)).first <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    async def read(self, partition: int, tail: Tail, offset: int, stop: int) -> tuple[list[Event], list[int]]:
        """The events in ``[offset, stop)`` and their append times (``tail.start <= offset``)."""
        stop = min(stop, tail.end)
        events: list[Event] = []
        append_ms: list[int] = []
        if offset >= stop:
            return events, append_ms
        seq = await self.locate(partition, tail, offset)
        while offset < stop:
            seqs = range(seq, min(seq + PREFETCH, tail.last_seq + 1))
            for frame, evs in await asyncio.gather(*(self._events(partition, s) for s in seqs)):
                if frame.first != offset and not frame.first <= offset < frame.end:
                    raise LogError(f"NATS stream {self.address.stream(partition)!r}: sequence "
                                   f"{frame.seq} starts at offset {frame.first}, expected {offset}")
                lo, hi = offset - frame.first, min(frame.count, stop - frame.first)
                events.extend(evs[lo:hi] if lo or hi < frame.count else evs)
                append_ms.extend([frame.append_ms] * (hi - lo))
                offset = frame.first + hi
                if offset >= stop:
                    break
            seq = seqs[-1] + 1
        return events, append_ms

    async def _events(self, partition: int, seq: int) -> tuple[Frame, list[Event]]:
        cached = self._decoded.get(partition)
        if cached is not None and cached[0].seq == seq:
            return cached
        frame, body = await self.message(partition, seq)
        events = decode_events(self.address.stream(partition), frame, body)
        self._decoded[partition] = (frame, events)
        return frame, events

    async def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """The first offset whose running max event time is ``>= ts_ms`` (the end if none)."""
        tail = await self.tail(partition)
        if tail.last is None or tail.last.run_max < ts_ms:
            return tail.end
        lo, hi = tail.first_seq, tail.last_seq
        while lo < hi:  # the first message whose running max reaches ts_ms
            mid = (lo + hi) // 2
            if (await self.frame(partition, mid)).run_max >= ts_ms:
                hi = mid
            else:
                lo = mid + 1
        running = (await self.frame(partition, lo - 1)).run_max if lo > tail.first_seq else None
        frame, events = await self._events(partition, lo)
        for i, ev in enumerate(events):
            running = ev.ts if running is None else max(running, ev.ts)
            if running >= ts_ms:
                return frame.first + i
        raise LogError(f"NATS stream {self.address.stream(partition)!r}, sequence {lo}: its running "
                       "max event time disagrees with its events")

    def unavailable(self, partition: int, exc: Any, seq: int | None = None) -> LogUnavailable:
        where = f", sequence {seq}" if seq is not None else ""
        return LogUnavailable(f"NATS stream {self.address.stream(partition)!r}{where} of --log "
                        f"{self.address.url}: {type(exc).__name__} {exc}".rstrip()
                        + "; is a NATS server of the log up (and, for replicated streams, a quorum)?")
