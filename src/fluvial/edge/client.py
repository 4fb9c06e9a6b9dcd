"""The device side: record events into a store-and-forward queue, send them in batches.

:class:`EdgeClient` gives each event the device's next ``seq`` (kept across restarts), stores it
in a :class:`~fluvial.edge.queue.DiskQueue` before :meth:`EdgeClient.record` returns, and sends
what the queue holds in batches (MessagePack, gzip-compressed) to ``POST /v1/events``, or
publishes them to the MQTT broker that ``fluvial serve --mqtt`` reads
(:mod:`fluvial.edge.transport`). A batch leaves the queue only once it was answered for; a batch
sent again after a lost answer, a crash or a restart is harmless, because the server keeps one
event per ``(device, seq)``: retries are exactly-once in effect.

Answers: 200 (and 422, every event refused: the server keeps those in its dead-letter log with
the reason) move the queue on, counting refusals in :attr:`SendStats.rejected`; 413 halves the
batch (a single event too large for the server, like a 400 or 415 for a body it cannot read, is
counted as rejected and passed); 429, 503 and 507 wait for ``Retry-After``; no answer or
another 5xx backs off exponentially (with jitter, capped at 30 s); 401 and 403 (a login the
broker refused, over MQTT) raise :class:`EdgeAuthError`: no retry can fix a credential.

The standard library and msgspec only (paho-mqtt for the MQTT transport, when asked for).
"""

from __future__ import annotations

import gzip
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from fluvial.edge.queue import DiskQueue, OnFull
from fluvial.edge.transport import open_transport

__all__ = ["EdgeAuthError", "EdgeClient", "SendStats"]

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode
COMPRESS_FROM = 512
"""Bodies from this many bytes on are gzip-compressed."""


class EdgeAuthError(Exception):
    """The server refused the device's credentials (401 or 403): retrying cannot help."""


@dataclass
class SendStats:
    """What :meth:`EdgeClient.flush` did (cumulative for the client).

    Attributes:
        requests: HTTP requests made.
        sent: Events in answered requests (accepted, duplicates and rejected).
        accepted: Events the server appended (HTTP; over MQTT the broker answers, with no counts).
        duplicates: Events the server already had (a resend; HTTP only, as ``accepted``).
        rejected: Events the server refused (kept in its dead-letter log with the reason).
        retries: Requests that failed and were tried again.
        bytes_sent: Request body bytes.
    """

    requests: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    bytes_sent: int = 0


class EdgeClient:
    """One device's events: recorded durably, sent in batches, each exactly once in effect.

    Args:
        url: The server (``http://host:port``), or an MQTT broker that ``fluvial serve --mqtt``
            reads (``mqtt://USER:PASSWORD@host:port``; see :mod:`fluvial.edge.transport`).
        device: The device id (the ``device`` of every event).
        directory: The device's queue directory (see :class:`~fluvial.edge.queue.DiskQueue`).
        token: A device token (``fluvial token create --device ID``), if the server asks (HTTP).
        max_bytes: The queue's bound on disk.
        on_full: What a full queue does: ``"refuse"`` (:meth:`record` raises
            :class:`~fluvial.edge.queue.QueueFull`) or ``"drop_oldest"``.
        fsync: ``"always"``: :meth:`record` returns once the event is on disk (survives a power
            loss); ``"never"``: the operating system writes it when it likes.
        batch_records: Events per request at most.
        timeout_s: Seconds to wait for an answer.
        clock: Milliseconds since the epoch (event time when :meth:`record` is given none).

    Example (with a server running)::

        client = EdgeClient("http://127.0.0.1:8080", "wrist-17", "/var/lib/wrist/queue")
        client.record("reading", {"kind": "accel_x", "value": 0.31})
        client.flush()
    """

    def __init__(self, url: str, device: str, directory: str | os.PathLike[str], *, token: str | None = None,
                 max_bytes: int = 64 << 20, on_full: OnFull = "refuse", fsync: Literal["always", "never"] = "always",
                 batch_records: int = 1000, timeout_s: float = 10.0,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        if not device:
            raise ValueError("device: give the device's id")
        if batch_records < 1:
            raise ValueError(f"batch_records={batch_records}: at least 1")
        self.url, self.device = url.rstrip("/"), device
        self.transport = open_transport(self.url, device, token=token, timeout_s=timeout_s)
        self.queue = DiskQueue(directory, max_bytes=max_bytes, on_full=on_full, fsync=fsync)
        self.batch_records, self.timeout_s, self.clock = batch_records, timeout_s, clock
        self.stats = SendStats()
        last = self.queue.last()
        newest = -1 if last is None else int(_decode(last)["seq"])
        self._next_seq = max(self.queue.high, newest) + 1
        self._rng = random.Random()

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next recorded event gets."""
        return self._next_seq

    @property
    def pending(self) -> int:
        """Events recorded and not yet answered for by the server."""
        return self.queue.stats.records

    def record(self, kind: str, payload: Mapping[str, Any], ts: int | None = None) -> int:
        """Store one event (durably with ``fsync="always"``) and return its ``seq``."""
        return self.record_many(kind, [payload], None if ts is None else [ts])[0]

    def record_many(self, kind: str, payloads: list[Mapping[str, Any]], ts: list[int] | None = None) -> list[int]:
        """Store several events of one kind at once (one write, one fsync); their seqs."""
        if ts is not None and len(ts) != len(payloads):
            raise ValueError(f"{len(payloads)} payloads but {len(ts)} timestamps")
        now = self.clock()
        seqs = list(range(self._next_seq, self._next_seq + len(payloads)))
        records = [_encode({"device": self.device, "kind": kind, "ts": now if ts is None else ts[i],
                            "seq": seq, "payload": dict(payload)})
                   for i, (seq, payload) in enumerate(zip(seqs, payloads))]
        self.queue.put(records)   # raises QueueFull (on_full="refuse"): these seqs stay unused
        self._next_seq += len(payloads)
        return seqs

    def flush(self, *, deadline_s: float | None = None) -> bool:
        """Send what the queue holds; True once it is empty, False if ``deadline_s`` passed first."""
        until = None if deadline_s is None else time.monotonic() + deadline_s
        batch, attempt = self.batch_records, 0
        while True:
            records, position = self.queue.peek(batch)
            if not records:
                return True
            if until is not None and time.monotonic() >= until:
                return False
            high = int(_decode(records[-1])["seq"])
            self.queue.remember(high)   # a seq once sent is never given to another event
            status, answer, retry_after = self._post(records)
            if status in (200, 422):
                self.stats.sent += len(records)
                self.stats.accepted += int(answer.get("accepted", 0))
                self.stats.duplicates += int(answer.get("duplicates", 0))
                self.stats.rejected += len(answer.get("rejected", []))
                self.queue.ack(position)
                attempt = 0
                continue
            if status in (401, 403):
                raise EdgeAuthError(f"{self.url} refused device {self.device!r} ({status}): "
                                    f"{answer.get('error', 'check the token')}")
            if status == 413 and batch > 1:
                batch = max(1, batch // 2)
                continue
            if status in (400, 413, 415):   # this body can never be taken (the server keeps an
                self.stats.sent += len(records)   # unreadable one in its dead-letter log)
                self.stats.rejected += len(records)
                self.queue.ack(position)
                continue
            self.stats.retries += 1
            wait = retry_after if retry_after is not None else min(30.0, 0.1 * 2 ** attempt)
            attempt += 1
            wait *= self._rng.uniform(0.8, 1.2)
            if until is not None:
                wait = min(wait, max(0.0, until - time.monotonic()))
            time.sleep(wait)

    def _post(self, records: list[bytes]) -> tuple[int, dict[str, Any], float | None]:
        """Send one batch: (status, answer, Retry-After); status 0 when no answer came."""
        body = _msgpack_array(records)
        gzipped = len(body) >= COMPRESS_FROM
        if gzipped:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        self.stats.requests += 1
        self.stats.bytes_sent += len(body)
        return self.transport.send(body, gzipped=gzipped)

    def close(self) -> None:
        """Let go of the connection (the queue keeps everything on disk)."""
        self.transport.close()


def _msgpack_array(items: list[bytes]) -> bytes:
    """A MessagePack array of already-encoded items (no decode and re-encode)."""
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16
                                             else b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(items)
