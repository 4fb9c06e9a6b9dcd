"""The HTTP driver of the simulated fleet: :class:`Simulator` paces a
:class:`~fluvial.simulate.workload.Workload` in real time and POSTs it in batches to
``{url}/v1/events``, resending a batch with the same ``seq`` numbers whenever that is
safe (the server stores a ``(device, seq)`` once); :class:`SimulatorReport` says what a
run did.
"""

from __future__ import annotations

import dataclasses
import gzip as gzip_module
import http.client
import math
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec

from fluvial.errors import ConfigError
from fluvial.events.codec import encode_json, encode_msgpack, encode_ndjson
from fluvial.events.envelope import Event
from fluvial.simulate.workload import Timeline, Workload, check_int

__all__ = ["FORMATS", "MAX_BATCH", "Simulator", "SimulatorReport"]

FORMATS = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "msgpack": "application/msgpack",
}
"""Body format -> its Content-Type."""

MAX_BATCH = 100_000


@dataclass
class SimulatorReport:
    """What a :meth:`Simulator.run` did. Counts are events unless they say batches.

    Attributes:
        start_ms: The workload's ``start_ms``: with the seed, it regenerates these events.
        sent: Events of batches the server answered for good (acknowledged or refused).
        accepted: Events the server stored.
        duplicates: Events the server had already (a resend after a lost answer).
        rejected: Events the server refused one by one (invalid), in acknowledged batches.
        dropped: Events of batches refused as a whole (4xx other than 429): not retried.
        dropped_batches: Those batches.
        retries: Resends: after 429/503 (also counted in ``throttled``) or a connection error.
        throttled: Resends after 429 or 503.
        unsent: Events still queued or in flight when the run had to stop.
        buffer_dropped: Readings offline devices dropped because their buffer was full.
        buffered: Readings held by devices still offline at the end (never sent).
        batches: Batches answered for good.
        elapsed_s: Wall-clock duration of the run.
        failovers: Resends that went to another server of the list than the one that failed.
        by_url: Events acknowledged by each server of the list.
        last_error: The last problem met, for the user (None if none).
        acked: ``(device, seq)`` of every acknowledged event (accepted or duplicate), in
            the order acknowledged; filled only with ``record=True`` and in the final report.
    """

    start_ms: int
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    dropped_batches: int = 0
    retries: int = 0
    throttled: int = 0
    unsent: int = 0
    buffer_dropped: int = 0
    buffered: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    failovers: int = 0
    by_url: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    acked: list[tuple[str, int]] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        """Achieved rate: events sent per second of the run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Rejection(msgspec.Struct):
    index: int
    reason: str = ""


class _Ack(msgspec.Struct):
    accepted: int = 0
    duplicates: int = 0
    rejected: list[_Rejection] = []


_ack_decoder = msgspec.json.Decoder(_Ack)
_ENCODERS = {"json": encode_json, "ndjson": encode_ndjson, "msgpack": encode_msgpack}


class _Endpoint(NamedTuple):
    https: bool
    host: str
    port: int | None
    path: str


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """The servers of ``urls``: one URL, a comma-separated list, or a sequence of them."""
    items = urls.split(",") if isinstance(urls, str) else [u for text in urls for u in str(text).split(",")]
    found = [u.strip() for u in items if u.strip()]
    if not found:
        raise ConfigError("no server URL given: name at least one, like http://127.0.0.1:8000")
    if len(set(found)) < len(found):
        raise ConfigError(f"a server URL is listed twice in {', '.join(found)}")
    return found


def _parse_url(url: str) -> _Endpoint:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"cannot read the server URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the server URL must look like http://HOST:PORT or https://HOST, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"the server URL {url!r} has a query or fragment: give only its base")
    return _Endpoint(parts.scheme == "https", parts.hostname, port, parts.path.rstrip("/") + "/v1/events")


class _Connection:
    """One keep-alive HTTP connection, reopened after an error."""

    def __init__(self, endpoint: _Endpoint, timeout_s: float) -> None:
        cls = http.client.HTTPSConnection if endpoint.https else http.client.HTTPConnection
        self._conn = cls(endpoint.host, endpoint.port, timeout=timeout_s)
        self._path = endpoint.path

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        try:
            self._conn.request("POST", self._path, body, headers)
            resp = self._conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, resp.getheader("Retry-After"), data

    def close(self) -> None:
        self._conn.close()


class _Route:
    """One sender's servers: the one it posts to now, and a keep-alive connection to each."""

    def __init__(self, urls: list[str], endpoints: list[_Endpoint], first: int, timeout_s: float) -> None:
        self.urls, self._endpoints, self._timeout_s = urls, endpoints, timeout_s
        self.at = first % len(endpoints)
        self._conns: dict[int, _Connection] = {}

    @property
    def url(self) -> str:
        return self.urls[self.at]

    def conn(self) -> _Connection:
        conn = self._conns.get(self.at)
        if conn is None:
            conn = self._conns[self.at] = _Connection(self._endpoints[self.at], self._timeout_s)
        return conn

    def fail_over(self) -> bool:
        """Move on to the next server of the list; False when there is only one."""
        if len(self._endpoints) == 1:
            return False
        self.at = (self.at + 1) % len(self._endpoints)
        return True

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


class Simulator:
    """Paces a :class:`Workload` in real time and POSTs it to one fluvial server or several.

    Args:
        url: The server's base URL (``http://127.0.0.1:8000``; events go to ``{url}/v1/events``),
            or several ingest nodes of one log (a comma-separated list or a sequence): the
            senders start on different ones (``connections`` spreads the load), and a batch
            that fails on one (connection error, 5xx, 429) is resent to the next.
        devices, rate, kinds, seed, offline_fraction, offline_spell_s, buffer_size, start_ms, first_seq:
            The :class:`Workload`.
        batch: Events per request (a partial batch leaves after :attr:`linger_s`).
        token: Sent as ``Authorization: Bearer <token>``.
        gzip: Compress bodies (``Content-Encoding: gzip``).
        fmt: ``"json"`` (an array), ``"ndjson"`` or ``"msgpack"``.
        record: Keep the ``(device, seq)`` of every acknowledged event in the report.
        connections: Sender threads, one keep-alive connection each.
        timeout_s: Socket timeout of a request; a timed-out batch is resent (safe: same seqs).

    Delivery: a batch is resent with the same seqs after 429/503/507 (waiting
    ``Retry-After``, at most :attr:`max_retry_after_s`, plus jitter) and after a
    connection error or 502/504 (exponential backoff up to :attr:`max_backoff_s`);
    with several servers the resend goes to the next one at once, and the waits
    apply once every server was tried. Any other refusal drops the batch and counts it. When the run ends, queued
    batches still get :attr:`drain_s` seconds to arrive.

    Example (needs a server, so not run here)::

        sim = Simulator("http://127.0.0.1:8000", devices=100, rate=2000, kinds=("reading", "tweet"))
        report = sim.run(10)
        print(report.accepted, report.rate)
    """

    max_retry_after_s = 30.0
    """The longest wait a ``Retry-After`` header obtains."""
    first_backoff_s = 0.1
    max_backoff_s = 5.0
    linger_s = 0.2
    """How long a partial batch waits for more events."""
    drain_s = 5.0
    """How long queued batches may still take once the run is over."""

    def __init__(self, url: str, *, devices: int, rate: float, kinds: tuple[str, ...] = ("reading",),
                 batch: int = 500, seed: int = 0, token: str | None = None, gzip: bool = True,
                 fmt: str = "json", offline_fraction: float = 0.02,
                 offline_spell_s: tuple[float, float] = (30.0, 120.0), buffer_size: int = 10_000,
                 start_ms: int | None = None, first_seq: int = 0, record: bool = False,
                 connections: int = 1, timeout_s: float = 10.0) -> None:
        self.urls = parse_urls(url)
        self.url = self.urls[0]
        self._endpoints = [_parse_url(u) for u in self.urls]
        self.workload = Workload(devices=devices, rate=rate, kinds=kinds, seed=seed, start_ms=start_ms,
                                 offline_fraction=offline_fraction, offline_spell_s=offline_spell_s,
                                 buffer_size=buffer_size, first_seq=first_seq)
        check_int("batch", batch, 1, MAX_BATCH)
        check_int("connections", connections, 1, 64)
        if fmt not in FORMATS:
            raise ConfigError(f"unknown body format {fmt!r}: use one of {', '.join(FORMATS)}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.batch, self.token, self.gzip, self.fmt = batch, token, gzip, fmt
        self.record, self.connections, self.timeout_s = record, connections, timeout_s
        self._lock = threading.Lock()
        self._report = SimulatorReport(start_ms=self.start_ms)
        self._t0: float | None = None

    @property
    def start_ms(self) -> int:
        """Epoch ms of the workload's offset 0."""
        assert self.workload.start_ms is not None
        return self.workload.start_ms

    def events(self, n: int) -> list[Event]:
        """The first ``n`` events :meth:`run` sends (no server needed)."""
        return self.workload.events(n)

    def generate(self, seconds: float) -> list[Event]:
        """The events :meth:`run` sends in its first ``seconds`` (no server needed)."""
        return self.workload.generate(seconds)

    def progress(self) -> SimulatorReport:
        """A snapshot of the running (or last) run's counts, without ``acked``."""
        with self._lock:
            snap = dataclasses.replace(self._report, acked=[])
        if self._t0 is not None:
            snap.elapsed_s = time.monotonic() - self._t0
        return snap

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> SimulatorReport:
        """Send the workload from its start until ``duration_s`` has passed or ``stop`` is set.

        Each run replays the same events (same seqs): a second run against the same
        server shows up as duplicates.
        """
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration must be > 0 seconds, got {duration_s!r}")
        stop = stop if stop is not None else threading.Event()
        abandon = threading.Event()
        timeline = Timeline(self.workload)
        batches: queue.Queue[list[Event] | None] = queue.Queue(maxsize=2 * self.connections)
        with self._lock:
            self._report = SimulatorReport(start_ms=self.start_ms)
        senders = [threading.Thread(target=self._send_loop, args=(batches, abandon, i),
                                    name=f"fluvial-simulate-{i}", daemon=True)
                   for i in range(self.connections)]
        t0 = self._t0 = time.monotonic()
        end_s = math.inf if duration_s is None else duration_s
        for sender in senders:
            sender.start()
        try:
            self._produce(timeline, batches, t0, end_s, stop)
        finally:
            deadline = time.monotonic() + self.drain_s
            for _ in senders:
                while True:
                    try:
                        batches.put(None, timeout=0.05)
                        break
                    except queue.Full:
                        if time.monotonic() > deadline:
                            abandon.set()
            for sender in senders:
                sender.join(max(0.0, deadline - time.monotonic()))
            abandon.set()
            for sender in senders:
                sender.join()
        with self._lock:
            report = self._report
            report.elapsed_s = time.monotonic() - t0
            report.buffer_dropped = timeline.buffer_dropped
            report.buffered = timeline.buffered()
            self._t0 = None
            return dataclasses.replace(report, acked=list(report.acked))

    # -- producing -----------------------------------------------------------------

    def _produce(self, timeline: Timeline, batches: queue.Queue[list[Event] | None], t0: float,
                 end_s: float, stop: threading.Event) -> None:
        end_ms = end_s * 1000
        stream = iter(timeline)
        at_ms, event = next(stream)
        batch: list[Event] = []
        batch_since = 0.0
        while True:
            now = time.monotonic()
            now_ms = (now - t0) * 1000
            while at_ms <= now_ms and at_ms < end_ms:
                if not batch:
                    batch_since = now
                batch.append(event)
                if len(batch) >= self.batch:
                    if not self._put(batches, batch, stop, t0 + end_s + self.drain_s):
                        return
                    batch = []
                at_ms, event = next(stream)
            done = now_ms >= end_ms or stop.is_set()
            if batch and (done or now - batch_since >= self.linger_s):
                if not self._put(batches, batch, stop, t0 + end_s + self.drain_s):
                    return
                batch = []
            if done:
                return
            wake_ms = min(at_ms, end_ms)
            if batch:
                wake_ms = min(wake_ms, (batch_since + self.linger_s - t0) * 1000)
            stop.wait(min(max(wake_ms - now_ms, 1.0), 100.0) / 1000)

    def _put(self, batches: queue.Queue[list[Event] | None], batch: list[Event],
             stop: threading.Event, give_up: float) -> bool:
        """Queue a batch, waiting for a sender; False (batch unsent) if the run must end."""
        while True:
            try:
                batches.put(batch, timeout=0.05)
                return True
            except queue.Full:
                if stop.is_set() or time.monotonic() > give_up:
                    self._count(unsent=len(batch))
                    return False

    # -- sending ---------------------------------------------------------------------

    def _send_loop(self, batches: queue.Queue[list[Event] | None], abandon: threading.Event,
                   index: int) -> None:
        jitter = random.Random(self.workload.seed * 1000 + index)  # for waits only: not the events
        route = _Route(self.urls, self._endpoints, index, self.timeout_s)
        try:
            while (batch := batches.get()) is not None:
                if abandon.is_set():
                    self._count(unsent=len(batch))
                else:
                    self._deliver(route, batch, abandon, jitter)
        finally:
            route.close()

    def _headers(self) -> dict[str, str]:
        from fluvial import __version__

        headers = {"Content-Type": FORMATS[self.fmt], "Accept": "application/json",
                   "User-Agent": f"fluvial-simulate/{__version__}"}
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _deliver(self, route: _Route, batch: list[Event], abandon: threading.Event,
                 jitter: random.Random) -> None:
        body = _ENCODERS[self.fmt](batch)
        if self.gzip:
            body = gzip_module.compress(body, compresslevel=1)  # fast: the sender must keep up
        headers = self._headers()
        attempt = 0
        while not abandon.is_set():
            url = route.url
            try:
                status, retry_after, data = route.conn().post(body, headers)
            except (OSError, http.client.HTTPException) as exc:
                # refused, reset, timed out: the server may be restarting; resending is safe
                wait = self._backoff(attempt, jitter)
                self._count(retries=1, error=f"POST {url}: {type(exc).__name__}: {exc}")
            else:
                if 200 <= status < 300:
                    self._acknowledge(batch, data, url)
                    return
                if status in (429, 503, 507):
                    wait = self._retry_after(retry_after, attempt, jitter)
                    self._count(retries=1, throttled=1)
                elif status in (502, 504):
                    wait = self._backoff(attempt, jitter)
                    self._count(retries=1, error=f"POST {url}: HTTP {status} (retrying)")
                else:
                    text = data[:200].decode("utf-8", "replace").strip()
                    self._count(sent=len(batch), dropped=len(batch), dropped_batches=1, batches=1,
                                error=f"POST {url}: HTTP {status}: {text or '(no body)'}; "
                                      f"batch of {len(batch)} events dropped")
                    return
            attempt += 1
            if route.fail_over():   # the same batch (same seqs) to the next node: stored once by the log
                self._count(failovers=1)
                wait = min(wait, self.first_backoff_s) if attempt % len(self.urls) else wait
            abandon.wait(wait)
        self._count(unsent=len(batch))

    def _backoff(self, attempt: int, jitter: random.Random) -> float:
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** min(attempt, 30)) * jitter.uniform(0.5, 1.0)

    def _retry_after(self, header: str | None, attempt: int, jitter: random.Random) -> float:
        try:
            seconds = float(header) if header is not None else math.nan
        except ValueError:
            seconds = math.nan
        if not 0 <= seconds < math.inf:  # absent, an HTTP date, or nonsense
            return self._backoff(attempt, jitter)
        seconds = min(seconds, self.max_retry_after_s)
        return seconds + jitter.uniform(0, 0.1 * seconds + 0.05)

    def _acknowledge(self, batch: list[Event], data: bytes, url: str) -> None:
        try:
            ack = _ack_decoder.decode(data) if data.strip() else _Ack(accepted=len(batch))
            error = None
        except msgspec.DecodeError as exc:
            ack, error = _Ack(accepted=len(batch)), f"unreadable acknowledgement ({exc}): counted as accepted"
        refused = {r.index for r in ack.rejected}
        if refused:
            error = f"server rejected {len(refused)} event(s), e.g. {ack.rejected[0].reason or '(no reason)'}"
        with self._lock:
            r = self._report
            r.sent += len(batch)
            r.batches += 1
            r.accepted += ack.accepted
            r.duplicates += ack.duplicates
            r.rejected += len(refused)
            r.by_url[url] = r.by_url.get(url, 0) + ack.accepted + ack.duplicates
            if error:
                r.last_error = error
            if self.record:
                r.acked.extend((e.device, e.seq) for i, e in enumerate(batch) if i not in refused)

    def _count(self, *, sent: int = 0, dropped: int = 0, dropped_batches: int = 0, batches: int = 0,
               retries: int = 0, throttled: int = 0, unsent: int = 0, failovers: int = 0,
               error: str | None = None) -> None:
        with self._lock:
            r = self._report
            r.sent += sent
            r.dropped += dropped
            r.dropped_batches += dropped_batches
            r.batches += batches
            r.retries += retries
            r.throttled += throttled
            r.unsent += unsent
            r.failovers += failovers
            if error:
                r.last_error = error
