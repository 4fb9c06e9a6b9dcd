"""Bounded resources of ``fluvial serve``'s ingest: what it takes before it sheds load.

Every ``POST /v1/events`` is admitted (or refused) before its body is read,
from what the server holds now, so that memory and latency stay bounded
however hard devices push:

======================  ======  =====================================================================
reason                  status  when
======================  ======  =====================================================================
``device_events``       429     the device (token, or client address) is over its events per second
``device_bytes``        429     ... over its request bytes per second
``memory``              503     the server's resident memory is over ``max_memory_bytes``
``speed_lag``           503     a speed-layer runner is ``max_lag_records`` behind the log
``queue_events``        503     more than ``max_queue_events`` events wait for the log writer
``queue_wait``          503     requests wait longer than ``max_queue_wait_ms`` for their answer
``pending_bytes``       429     the request bodies in flight would exceed ``max_pending_bytes``
``dead_letter_quota``   429     the device is over its dead-letter bytes of the window: its bad body
                                is refused and counted, not kept
``log_unavailable``     503     the log cannot be written now (507 for a full disk)
======================  ======  =====================================================================

Every refusal carries ``Retry-After`` (whole seconds) and is counted by reason
(``/metrics``: ``fluvial_shed_total{reason=...}``).

**The pending budget.** A request reserves its ``Content-Length`` before a
byte of its body is read; a chunked body is counted chunk by chunk, and
reading stops (429) when the budget cannot take the next chunk. Inflating
gzip adds the inflated bytes. The bytes stay reserved until the request is
answered, so they cover the decoded events waiting for the log writer too.
Decoded events take about 4 to 6 times their JSON size in memory, so ingest
holds at most about ``6 * max_pending_bytes`` on top of the server's baseline.

**Queue wait.** How long the oldest request whose body is read has been
waiting for its answer (decoding, the log writer, the append), plus the
event loop's lag (the least lateness of its last three 50 ms timers: a
request waits about that long before its headers are even read). Only the
server's own work counts, not how fast clients send. Once the queue wait
has stayed over ``max_queue_wait_ms`` for :data:`OVERLOADED_FOR_S` (so a
passing stall, a pause of the whole process, sheds nothing), new requests
get 503 until it is back under: the excess is answered at once instead of
queued, before latency and memory explode.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fluvial.server.ingest import IngestError

__all__ = ["BodyTimeout", "ClientGone", "Limits", "Shed", "Ticket", "read_body"]

OVERLOADED_FOR_S = 0.25
"""Requests are shed once the queue wait has been over its limit for this long (a stall is not overload)."""
DRAIN_WINDOW_S = 2.0
"""The window over which the rate of answered bytes is measured (for Retry-After)."""
RSS_EVERY_S = 0.1
"""The resident memory is read at most this often."""
LAG_EVERY_S = 0.05
"""How often the event loop's lag is measured (a timer's lateness)..."""
LAG_SAMPLES = 3
"""... and the lag is the least of the last this many (one stall is not congestion)."""
MAX_KEYS = 100_000
"""Devices (or addresses) with a rate-limit or quota entry before idle entries are dropped."""
_MIB = 1 << 20

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Shed(IngestError):
    """A request refused to keep the server within its limits (429/503 + ``Retry-After``).

    Attributes:
        cause: The reason counted in the metrics (``pending_bytes``, ``queue_wait``...).
        retry_after_s: Whole seconds to wait before sending again (at least 1).
        rejected: ``{"index", "reason"}`` of each event of the body, when they were read and all
            refused (a body over its device's dead-letter quota); None otherwise.
    """

    def __init__(self, status: int, cause: str, reason: str, retry_after_s: float) -> None:
        super().__init__(status, reason)
        self.cause = cause
        self.retry_after_s = max(1, min(3600, math.ceil(retry_after_s)))
        self.rejected: list[dict[str, Any]] | None = None


class BodyTimeout(IngestError):
    """The request body did not arrive within ``body_timeout_s`` (408; the connection is closed)."""


class ClientGone(IngestError):
    """The client closed the connection before its body was read."""


class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``burst``; a request is let in while tokens are left,
    then charged what it really cost (the balance may go negative: later requests wait it out).

    Example:
        >>> b = TokenBucket(rate=10, burst=20, now=0.0)
        >>> b.wait_s(0.0), b.charge(50, 0.0), b.wait_s(0.0), b.wait_s(3.0)
        (0.0, None, 3.001, 0.001)
    """

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_s(self, now: float) -> float:
        """Seconds until a request may go (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else round(-self.tokens / self.rate + 0.001, 6)

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` tokens (into debt if needed)."""
        self._refill(now)
        self.tokens -= cost

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class KeyedBuckets:
    """One :class:`TokenBucket` per device (or client address); full buckets are dropped when many."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}

    def get(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
            bucket = self._buckets[key] = TokenBucket(rate=self.rate, burst=self.burst, now=now)
        return bucket


class DeadLetterQuota:
    """Dead-letter bytes per device (or client address) and fixed window.

    A device keeps dead letters while it has used less than ``quota`` bytes in the
    current window (the body that crosses the line is still kept); beyond, its bad
    bodies are refused and counted.

    Example:
        >>> q = DeadLetterQuota(quota=100, window_s=60)
        >>> q.take("d", 80, now=0.0), q.take("d", 80, now=1.0), q.take("d", 1, now=2.0), q.take("d", 1, now=60.0)
        (True, True, False, True)
        >>> q.reset_in("d", now=61.0)
        59.0
    """

    def __init__(self, *, quota: int, window_s: float) -> None:
        self.quota, self.window_s = quota, window_s
        self._used: dict[str, list[float]] = {}  # key -> [window start, bytes used]

    def take(self, key: str, nbytes: int, now: float) -> bool:
        """Count ``nbytes`` of dead letters for ``key``; False (nothing counted) when over its quota."""
        entry = self._used.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            if entry is None and len(self._used) >= MAX_KEYS:
                self._used = {k: e for k, e in self._used.items() if now - e[0] < self.window_s}
            entry = self._used[key] = [now, 0.0]
        if entry[1] >= self.quota:
            return False
        entry[1] += nbytes
        return True

    def reset_in(self, key: str, now: float) -> float:
        """Seconds until ``key``'s window starts again."""
        entry = self._used.get(key)
        return 0.0 if entry is None else max(0.0, entry[0] + self.window_s - now)


@dataclass(eq=False)
class Ticket:
    """One admitted request's share of the pending budget, from admission to answer."""

    limits: Limits
    key: str | None
    reserved: int
    read: int = 0
    body_done_at: float | None = None
    released: bool = False

    def take(self, n: int) -> bool:
        """Count ``n`` more body bytes; False when the budget cannot take them (stop reading)."""
        self.read += n
        extra = self.read - self.reserved
        if extra <= 0:
            return True
        limits = self.limits
        if limits.pending_bytes + extra > limits.max_pending_bytes:
            return False
        limits.pending_bytes += extra
        self.reserved += extra
        return True

    def hold(self, n: int) -> None:
        """Count ``n`` more bytes whatever the budget (the inflated size of a gzip body)."""
        if n > 0:
            self.limits.pending_bytes += n
            self.reserved += n

    def events(self, n: int) -> None:
        """Charge the device's events-per-second bucket with the events of its body."""
        self.limits.charge_events(self.key, n)

    def body_read(self) -> None:
        """The whole body is in: from now on the request waits for the server alone."""
        self.body_done_at = self.limits.clock()
        self.limits.processing[self] = None

    def release(self) -> None:
        """The request is answered: give its bytes back and record its queue wait."""
        if not self.released:
            self.released = True
            self.limits.finished(self)


class Limits:
    """Admission control of ingest: the pending budget, load shedding, per-device rates and quotas.

    Args:
        settings: The server's :class:`~fluvial.settings.Settings` (``[server]`` and ``[limits]``).
        writer: The :class:`~fluvial.server.writer.LogWriter` (its queue).
        clock: ``time.monotonic`` (tests pass their own).

    Attributes:
        pending_bytes: Bytes of the requests admitted and not yet answered.
        shed: Requests refused, by reason.
        dead_letters_refused: Dead letters not kept (a device over its quota).
        dead_letter_bytes_refused: Their bytes.
    """

    def __init__(self, settings: Any, writer: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        from fluvial.server.connections import ConnectionGuard

        server, limits = settings.server, settings.limits
        self.settings = limits
        self.auth = server.auth_enabled
        self.max_pending_bytes: int = server.max_pending_bytes
        self.max_memory_bytes: int = limits.max_memory_bytes or half_of_memory()
        self.writer = writer
        self.clock = clock
        self.connections = ConnectionGuard(limits)
        self.pending_bytes = 0
        self.shed: Counter[str] = Counter()
        self.dead_letters_refused = 0
        self.dead_letter_bytes_refused = 0
        self._events = (KeyedBuckets(rate=limits.device_events_per_s, burst=limits.device_events_burst)
                        if limits.device_events_per_s > 0 else None)
        self._bytes = (KeyedBuckets(rate=limits.device_bytes_per_s, burst=limits.device_bytes_burst)
                       if limits.device_bytes_per_s > 0 else None)
        self._quota = (DeadLetterQuota(quota=limits.dead_letter_bytes, window_s=limits.dead_letter_window_s)
                       if limits.dead_letter_bytes > 0 else None)
        self.processing: dict[Ticket, None] = {}              # bodies read, not answered; oldest first
        self._over_since: float | None = None                # since when the queue wait is over its limit
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._lag_timer: asyncio.TimerHandle | None = None
        self._drained: deque[tuple[float, int]] = deque()    # (answered at, bytes)
        self._drained_bytes = 0
        self._rss = 0
        self._rss_at = -math.inf
        self._trimmed_at = -math.inf

    # -- who is limited -------------------------------------------------------------------------

    def key_of(self, grant: Any, client_host: str | None) -> str | None:
        """Whose rates and quota a request counts against: its device token's device; with auth off
        and ``per_address``, its client address; else nobody's (admin tokens are not limited)."""
        if grant is not None:
            return f"device {grant.device}" if grant.role == "device" else None
        if not self.auth and self.settings.per_address and client_host:
            return f"address {client_host}"
        return None

    # -- admission -----------------------------------------------------------------------------

    def admit(self, content_length: int | None, key: str | None, *, lagging: str | None = None) -> Ticket:
        """Admit a request before its body is read: reserve ``content_length`` bytes of the budget.

        Args:
            content_length: The request's ``Content-Length`` (None: chunked, counted as it streams).
            key: From :meth:`key_of`.
            lagging: Why the speed layer is too far behind (None: it is not).

        Raises:
            Shed: The request is refused (counted by its reason).
        """
        now = self.clock()
        try:
            self._check_rates(key, now)
            self._check_memory(now)
            if lagging is not None:
                raise Shed(503, "speed_lag", f"{lagging}: send again later", 1)
            self._check_queue(now)
            reserve = content_length or 0
            if self.pending_bytes + max(reserve, 1) > self.max_pending_bytes:
                raise Shed(429, "pending_bytes",
                           f"ingest holds {self.pending_bytes} bytes of requests in flight; this body "
                           f"({reserve} bytes) would pass max_pending_bytes ({self.max_pending_bytes}): send "
                           "it again after Retry-After", self.drain_s(self.pending_bytes))
        except Shed as exc:
            self.shed[exc.cause] += 1
            raise
        self.pending_bytes += reserve
        return Ticket(self, key, reserve)

    def refused(self, cause: str) -> None:
        """Count a refusal decided elsewhere (a failing log writer, the budget mid-body)."""
        self.shed[cause] += 1

    def _check_rates(self, key: str | None, now: float) -> None:
        if key is None:
            return
        for buckets, cause, what in ((self._events, "device_events", "events"),
                                     (self._bytes, "device_bytes", "request bytes")):
            if buckets is None:
                continue
            wait = buckets.get(key, now).wait_s(now)
            if wait > 0:
                raise Shed(429, cause, f"{key} is over its {what} per second ({buckets.rate:g}, bursts of "
                                       f"{buckets.burst:g}; [limits] device_{cause.split('_')[1]}_per_s): send "
                                       "again after Retry-After, or fewer", wait)

    def _check_memory(self, now: float) -> None:
        rss = self.rss_bytes(now)
        if rss > self.max_memory_bytes:
            self._trim(now)
            raise Shed(503, "memory", f"the server uses {rss // _MIB} MiB of memory, over its bound of "
                                      f"{self.max_memory_bytes // _MIB} MiB ([limits] max_memory_bytes): send "
                                      "again after Retry-After", 2)

    def _check_queue(self, now: float) -> None:
        limits = self.settings
        queued = self.writer.queued_events
        if queued > limits.max_queue_events:
            raise Shed(503, "queue_events", f"{queued} events wait for the log writer (max_queue_events "
                                            f"{limits.max_queue_events}): send again after Retry-After",
                       self.queue_wait_s(now) or 1)
        wait = self.queue_wait_s(now)
        if wait * 1000 <= limits.max_queue_wait_ms:
            self._over_since = None
            return
        if self._over_since is None:
            self._over_since = now
        if now - self._over_since >= OVERLOADED_FOR_S:  # overloaded, not a passing stall
            raise Shed(503, "queue_wait", f"requests wait {wait * 1000:.0f} ms for their answer (max_queue_wait_ms "
                                          f"{limits.max_queue_wait_ms}): send again after Retry-After", wait)

    # -- what the server holds now ------------------------------------------------------------

    def queue_wait_s(self, now: float | None = None) -> float:
        """How long a request waits for its answer now: how long the oldest request whose body is read
        has waited since (to be decoded, for the log writer, for its answer), plus the event loop's lag
        (how long a request waits before its headers are even read)."""
        now = self.clock() if now is None else now
        oldest = next(iter(self.processing), None)
        waiting = 0.0 if oldest is None or oldest.body_done_at is None else now - oldest.body_done_at
        return max(waiting, self.writer.queue_wait_s()) + self.loop_lag_s()

    def loop_lag_s(self) -> float:
        """How late the event loop runs what is due (the least of its last :data:`LAG_SAMPLES` timers).

        A request waits about that long before its headers are even read, unseen by its own wait.
        """
        if self._lag_timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop (a test calling from a thread)
                self._measure_lag(asyncio.get_running_loop(), None)
        return min(self._lags) if len(self._lags) == LAG_SAMPLES else 0.0

    def _measure_lag(self, loop: asyncio.AbstractEventLoop, due: float | None) -> None:
        now = time.monotonic()
        if due is not None:
            self._lags.append(max(0.0, now - due))
        self._lag_timer = loop.call_at(loop.time() + LAG_EVERY_S, self._measure_lag, loop, now + LAG_EVERY_S)

    def drain_s(self, nbytes: int) -> float:
        """Seconds the server needs to answer ``nbytes`` at its recent rate: 1 when unknown, and at most
        ``max_queue_wait_ms`` (admitted requests are answered about that fast, or the server sheds)."""
        self._expire_drained(self.clock())
        done = self._drained_bytes
        estimate = nbytes / (done / DRAIN_WINDOW_S) if done else 1.0
        return min(estimate, self.settings.max_queue_wait_ms / 1000)

    def _expire_drained(self, now: float) -> None:
        while self._drained and now - self._drained[0][0] > DRAIN_WINDOW_S:
            self._drained_bytes -= self._drained.popleft()[1]

    def rss_bytes(self, now: float | None = None) -> int:
        """The server's resident memory (read at most every :data:`RSS_EVERY_S`; 0 where unknown)."""
        now = self.clock() if now is None else now
        if now - self._rss_at >= RSS_EVERY_S:
            self._rss, self._rss_at = resident_bytes(), now
        return self._rss

    def _trim(self, now: float) -> None:
        """Hand freed memory back to the system (glibc keeps it otherwise), at most once a second."""
        if now - self._trimmed_at >= 1.0:
            self._trimmed_at = now
            malloc_trim()
            self._rss_at = -math.inf

    # -- after admission ----------------------------------------------------------------------

    def charge_events(self, key: str | None, n: int) -> None:
        if key is not None and self._events is not None:
            self._events.get(key, self.clock()).charge(n, self.clock())

    def keep_dead_letters(self, key: str | None, nbytes: int) -> bool:
        """Whether ``key`` may add ``nbytes`` to the dead-letter log now (its quota); counts refusals."""
        if key is None or self._quota is None:
            return True
        if self._quota.take(key, nbytes, self.clock()):
            return True
        self.dead_letters_refused += 1
        self.dead_letter_bytes_refused += nbytes
        return False

    def quota_refusal(self, key: str, what: str) -> Shed:
        """The 429 for a bad body of ``key`` that its dead-letter quota no longer keeps."""
        limits = self.settings
        self.shed["dead_letter_quota"] += 1
        return Shed(429, "dead_letter_quota",
                    f"{what}; it was NOT kept in the dead-letter log: {key} sent more than "
                    f"{limits.dead_letter_bytes} bytes of bad input in {limits.dead_letter_window_s:g} s ([limits] "
                    "dead_letter_bytes); fix what the device sends",
                    self._quota.reset_in(key, self.clock()) if self._quota is not None else 1)

    def finished(self, ticket: Ticket) -> None:
        now = self.clock()
        self.processing.pop(ticket, None)
        self.pending_bytes -= ticket.reserved
        self._drained.append((now, ticket.read))
        self._drained_bytes += ticket.read
        self._expire_drained(now)
        if ticket.key is not None and self._bytes is not None:
            self._bytes.get(ticket.key, now).charge(ticket.read, now)

    # -- metrics ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything ``/v1/metrics`` shows under ``limits``."""
        s = self.settings
        return {
            "pending_bytes": self.pending_bytes, "max_pending_bytes": self.max_pending_bytes,
            "queue_events": self.writer.queued_events, "max_queue_events": s.max_queue_events,
            "queue_wait_ms": round(self.queue_wait_s() * 1000, 1), "max_queue_wait_ms": s.max_queue_wait_ms,
            "rss_bytes": self.rss_bytes(), "max_memory_bytes": self.max_memory_bytes,
            "shed": dict(sorted(self.shed.items())),
            "dead_letters_refused": self.dead_letters_refused,
            "dead_letter_bytes_refused": self.dead_letter_bytes_refused,
            "device": {"events_per_s": s.device_events_per_s, "events_burst": s.device_events_burst,
                       "bytes_per_s": s.device_bytes_per_s, "bytes_burst": s.device_bytes_burst,
                       "dead_letter_bytes": s.dead_letter_bytes, "dead_letter_window_s": s.dead_letter_window_s,
                       "per_address": s.per_address},
            "connections": self.connections.snapshot(),
        }


async def read_body(receive: Receive, ticket: Ticket, *, max_bytes: int, timeout_s: float) -> bytearray:
    """Read a request body, counting each chunk against the pending budget as it arrives.

    Raises:
        IngestError: 413 past ``max_bytes``.
        Shed: 429 when the budget cannot take the next chunk (reading stops).
        BodyTimeout: The whole body took longer than ``timeout_s``.
        ClientGone: The client went away.
    """
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone(400, "the client closed the connection before its body was read")
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                if not chunk:
                    continue
                if len(body) + len(chunk) > max_bytes:
                    raise IngestError(413, f"the body exceeds {max_bytes} bytes (max_body_bytes): send fewer "
                                           "events per request")
                if not ticket.take(len(chunk)):
                    limits = ticket.limits
                    limits.refused("pending_bytes")
                    raise Shed(429, "pending_bytes",
                               f"ingest holds {limits.pending_bytes} bytes of requests in flight: this body "
                               f"would pass max_pending_bytes ({limits.max_pending_bytes}) after {len(body)} "
                               "bytes: send it again after Retry-After", limits.drain_s(limits.pending_bytes))
                body += chunk
    except TimeoutError:
        raise BodyTimeout(408, f"the body did not arrive within {timeout_s:g} s ([limits] body_timeout_s; "
                               f"{len(body)} bytes came): send it again, faster or smaller") from None
    ticket.body_read()
    return body


def prometheus_metrics(snap: dict[str, Any]) -> list[tuple[str, str, str, list[tuple[dict[str, str], Any]]]]:
    """``(name, type, help, samples)`` of :meth:`Limits.snapshot` for ``/metrics`` (``fluvial_`` prefixed there)."""
    conns, device = snap["connections"], snap["device"]
    limit_samples = [({"limit": k}, v) for k, v in (
        ("max_pending_bytes", snap["max_pending_bytes"]), ("max_queue_events", snap["max_queue_events"]),
        ("max_queue_wait_ms", snap["max_queue_wait_ms"]), ("max_memory_bytes", snap["max_memory_bytes"]),
        ("max_connections", conns["max"]), ("header_timeout_s", conns["header_timeout_s"]),
        ("body_timeout_s", conns["body_timeout_s"]), ("keep_alive_s", conns["keep_alive_s"]),
        ("device_events_per_s", device["events_per_s"]), ("device_events_burst", device["events_burst"]),
        ("device_bytes_per_s", device["bytes_per_s"]), ("device_bytes_burst", device["bytes_burst"]),
        ("dead_letter_bytes", device["dead_letter_bytes"]), ("dead_letter_window_s", device["dead_letter_window_s"]))]
    return [
        ("limit", "gauge", "The configured limits ([server] and [limits] of fluvial.toml).", limit_samples),
        ("shed_total", "counter", "Requests refused to stay within the limits (429/503), by reason.",
         [({"reason": r}, n) for r, n in snap["shed"].items()]),
        ("pending_bytes", "gauge", "Request bytes admitted and not yet answered.", [({}, snap["pending_bytes"])]),
        ("queue_events", "gauge", "Events waiting for the log writer.", [({}, snap["queue_events"])]),
        ("queue_wait_ms", "gauge", "How long a request waits for the log writer now.", [({}, snap["queue_wait_ms"])]),
        ("resident_memory_bytes", "gauge", "The server's resident memory.", [({}, snap["rss_bytes"])]),
        ("dead_letters_refused_total", "counter", "Dead letters not kept: their device was over its quota.",
         [({}, snap["dead_letters_refused"])]),
        ("dead_letter_bytes_refused_total", "counter", "Bytes of the dead letters not kept.",
         [({}, snap["dead_letter_bytes_refused"])]),
        ("connections_open", "gauge", "Open HTTP connections.", [({}, conns["open"])]),
        ("connections_refused_total", "counter", "Connections answered 503: the connection limit was reached.",
         [({}, conns["refused"])]),
        ("connections_closed_total", "counter", "Connections the server closed, by reason (timeouts, limit).",
         [({"reason": r}, n) for r, n in conns["closed"].items()]),
    ]


# -- the machine -------------------------------------------------------------------------------------

def resident_bytes() -> int:
    """This process's resident memory in bytes (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def half_of_memory() -> int:
    """Half of this machine's physical memory (the default ``max_memory_bytes``); 1 TiB when unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError):
        return 1 << 40


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: give the system the freed memory it keeps (nothing elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
