"""Devices as first-class: what the log says about each device, kept up to date exactly once.

A :class:`DeviceTracker` follows the log from its checkpoint and keeps one row per device
in the store's ``save_to`` table :data:`TABLE` (upserted for the devices a step touched,
in the transaction that moves the checkpoint, so a crash replays nothing twice):

* ``events``: events the log holds from it;
* ``first_seen_ms``, ``last_seen_ms``: wall-clock time the log stored its first and last event;
* ``last_event_ms``: the largest event time it stamped (its future-stamped events aside);
* ``late``: events stamped more than ``late_ms`` behind its own largest event time so far
  (sent out of order by the device itself; a backlog flushed in order is not late);
* ``future``: events stamped more than ``future_ms`` after the log stored them (a clock
  ahead; they move no watermark, see :mod:`fluvial.windows.watermark`);
* ``flushes``: backlogs flushed: times it went from sending current events to sending
  events more than ``flush_lag_ms`` older than their arrival (what a device does when it
  reconnects after being offline);
* ``partition``: the log partition it writes to.

Whether a device is *quiet* (nothing stored from it for ``quiet_after_ms``) is decided
when asked (:func:`list_devices`), against the wall clock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from fluvial.errors import CheckpointFenced
from fluvial.events.lost import LOST_KIND
from fluvial.windows.watermark import DEFAULT_FUTURE_MS

if TYPE_CHECKING:
    from fluvial.log.base import LogReader
    from fluvial.serving.base import ViewStore

__all__ = ["COLUMNS", "TABLE", "DeviceFollower", "DeviceTracker", "committed_position", "list_devices"]
_logger = logging.getLogger("fluvial.devices")

TABLE = "fluvial_devices"
CHECKPOINT = "fluvial.devices"
COLUMNS = ["device", "partition", "events", "first_seen_ms", "last_seen_ms", "last_event_ms", "late", "future",
           "flushes", "lagging"]
DEFAULT_LATE_MS = 30_000
DEFAULT_FLUSH_LAG_MS = 60_000
DEFAULT_QUIET_AFTER_MS = 10 * 60_000


class _Position(msgspec.Struct, frozen=True):
    offsets: list[int]


@dataclass
class _Device:
    partition: int
    events: int = 0
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    last_event_ms: int | None = None
    late: int = 0
    future: int = 0
    flushes: int = 0
    lagging: bool = False

    def row(self, device: str) -> list[Any]:
        return [device, self.partition, self.events, self.first_seen_ms, self.last_seen_ms, self.last_event_ms,
                self.late, self.future, self.flushes, int(self.lagging)]


class DeviceTracker:
    """Follows the log into :data:`TABLE`; one step reads up to ``max_records`` per partition.

    Several trackers may run (a server, a ``fluvial devices`` command): each step commits
    only if the checkpoint is still the one it read, else it reloads and goes on.
    """

    def __init__(self, log: LogReader, store: ViewStore, *, late_ms: int = DEFAULT_LATE_MS,
                 future_ms: int = DEFAULT_FUTURE_MS, flush_lag_ms: int = DEFAULT_FLUSH_LAG_MS,
                 max_records: int = 100_000) -> None:
        self.log, self.store = log, store
        self.late_ms, self.future_ms, self.flush_lag_ms = late_ms, future_ms, flush_lag_ms
        self.max_records = max_records
        self._token: int | None = None
        self._offsets: list[int] = []
        self._devices: dict[str, _Device] = {}
        self._loaded = False

    def _load(self) -> None:
        """The checkpoint and the rows it goes with (read again if a tracker committed in between)."""
        while True:   # the table exists once the checkpoint does (both are written in one transaction)
            before = self.store.checkpoint_token(CHECKPOINT)
            rows = self.store.table_rows(TABLE) if before is not None else []
            with self.store.transaction() as txn:
                self._token = txn.checkpoint_token(CHECKPOINT)
                blob = txn.get_checkpoint(CHECKPOINT)
            if self._token == before:
                break
        starts = self.log.start_offsets()
        self._offsets = msgspec.msgpack.decode(blob, type=_Position).offsets if blob else list(starts)
        if len(self._offsets) != len(starts):
            raise ValueError(f"the device table was kept for a log of {len(self._offsets)} partitions, "
                             f"this log has {len(starts)}")
        self._offsets = [max(o, s) for o, s in zip(self._offsets, starts)]   # retention moved the start
        self._devices = {r["device"]: _Device(r["partition"], r["events"], r["first_seen_ms"], r["last_seen_ms"],
                                              r["last_event_ms"], r["late"], r["future"], r["flushes"],
                                              bool(r["lagging"])) for r in rows}
        self._loaded = True

    def step(self) -> int:
        """Read what the log gained (up to ``max_records`` per partition) and commit it; the records read."""
        if not self._loaded:
            self._load()
        offsets = list(self._offsets)
        records = 0
        changed: dict[str, _Device] = {}   # copies: a fenced commit leaves self._devices as it was
        for partition, start in enumerate(offsets):
            batch = self.log.read(partition, start, max_records=self.max_records)
            for e, arrived in zip(batch.events, batch.append_ms):
                if e.kind == LOST_KIND:
                    continue
                d = changed.get(e.device)
                if d is None:
                    old = self._devices.get(e.device)
                    d = changed[e.device] = _copy(old) if old is not None else _Device(partition, first_seen_ms=arrived)
                self._observe(d, e.ts, arrived)
            records += len(batch.events)
            offsets[partition] = batch.next_offset
        if records == 0:
            return 0
        try:
            with self.store.transaction() as txn:
                txn.save_rows(TABLE, COLUMNS, [changed[name].row(name) for name in sorted(changed)], key_columns=1)
                self._token = txn.set_checkpoint(CHECKPOINT, msgspec.msgpack.encode(_Position(offsets)),
                                                 expect=self._token)
        except CheckpointFenced:
            self._loaded = False   # another tracker moved on: start again from its checkpoint
            return 0
        self._offsets = offsets
        self._devices.update(changed)
        return records

    def _observe(self, d: _Device, ts: int, arrived: int) -> None:
        d.events += 1
        d.last_seen_ms = max(d.last_seen_ms, arrived)
        if ts > arrived + self.future_ms:
            d.future += 1
            return
        if d.last_event_ms is not None and ts < d.last_event_ms - self.late_ms:
            d.late += 1
        lagging = arrived - ts > self.flush_lag_ms
        if lagging and not d.lagging:
            d.flushes += 1
        d.lagging = lagging
        if d.last_event_ms is None or ts > d.last_event_ms:
            d.last_event_ms = ts

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Steps until the log's end when this began; the records read."""
        ends = self.log.end_offsets()
        total = 0
        while True:
            n = self.step()
            total += n
            if progress is not None and n:
                progress(n)
            if all(o >= e for o, e in zip(self._offsets, ends)) or (n == 0 and self._loaded):
                return total

    def position(self) -> list[int]:
        """The log offsets the device table covers (per partition)."""
        if not self._loaded:
            self._load()
        return list(self._offsets)


def _copy(d: _Device) -> _Device:
    return _Device(d.partition, d.events, d.first_seen_ms, d.last_seen_ms, d.last_event_ms, d.late, d.future,
                   d.flushes, d.lagging)


def committed_position(store: ViewStore) -> list[int] | None:
    """The log offsets the device table covers (per partition), as committed; None before any."""
    with store.transaction() as txn:
        blob = txn.get_checkpoint(CHECKPOINT)
    return None if blob is None else msgspec.msgpack.decode(blob, type=_Position).offsets


def list_devices(store: ViewStore, *, quiet_after_ms: int = DEFAULT_QUIET_AFTER_MS,
                 now_ms: int | None = None) -> list[dict[str, Any]]:
    """Every device the tracker has seen, as dicts of :data:`COLUMNS` (``lagging`` as a bool)
    and ``quiet`` (nothing stored from it for ``quiet_after_ms``), sorted by device."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = store.table_rows(TABLE) if store.checkpoint_token(CHECKPOINT) is not None else []
    out = []
    for r in rows:
        row = {c: r[c] for c in COLUMNS}
        row["lagging"] = bool(row["lagging"])
        row["quiet"] = now - int(r["last_seen_ms"]) > quiet_after_ms
        out.append(row)
    return sorted(out, key=lambda r: r["device"])


class DeviceFollower:
    """Keeps the device table up to date in a thread of its own (``fluvial serve``), with its own
    log reader and store connection (``open_workspace()``); a failure is logged and retried."""

    def __init__(self, open_workspace: Callable[[], Any], *, interval_s: float = 1.0,
                 max_records: int = 2_000) -> None:
        self._open = open_workspace
        self.interval_s = interval_s
        self.max_records = max_records   # per partition and step: small steps keep the server's memory flat
        self._stop = threading.Event()
        self._wake = threading.Event()   # set: look at the log now rather than after interval_s
        self._thread: threading.Thread | None = None
        self._tracker: DeviceTracker | None = None
        self.errors = 0   # failed rounds (each logged, then retried)

    def start(self) -> DeviceFollower:
        self._thread = threading.Thread(target=self._run, name="fluvial-devices", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        ws = None
        while not self._stop.is_set():
            try:
                if ws is None:
                    ws = self._open()
                    self._tracker = DeviceTracker(ws.log, ws.store, max_records=self.max_records)
                assert self._tracker is not None
                while self._tracker.step() and not self._stop.is_set():
                    pass
            except Exception as exc:   # the store or log out of reach: the checkpoint is intact, go on later
                self.errors += 1
                _logger.warning("device table: %s: %s (retrying)", type(exc).__name__, exc)
                if ws is not None:
                    with contextlib.suppress(Exception):
                        ws.close()
                ws, self._tracker = None, None
            self._wake.wait(self.interval_s)
            self._wake.clear()
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()

    def wait_for(self, store: ViewStore, ends: list[int], *, timeout_s: float = 10.0) -> bool:
        """Wake the follower and wait until the device table covers the log up to ``ends`` (what
        the log held when a request came: read-your-writes), read from ``store``; whether it did
        within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            at = committed_position(store)
            if all(e <= 0 for e in ends) or (at is not None and all(a >= e for a, e in zip(at, ends))):
                return True
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.02)

    def summary(self, *, quiet_after_ms: int = DEFAULT_QUIET_AFTER_MS) -> dict[str, int]:
        """Counts for ``/metrics``: devices known and quiet, their late and future-stamped
        events and backlog flushes (from what this follower last committed), its failed rounds."""
        tracker = self._tracker
        devices = dict(tracker._devices) if tracker is not None else {}
        now = int(time.time() * 1000)
        return {"known": len(devices),
                "quiet": sum(1 for d in devices.values() if now - d.last_seen_ms > quiet_after_ms),
                "late_events": sum(d.late for d in devices.values()),
                "future_events": sum(d.future for d in devices.values()),
                "backlog_flushes": sum(d.flushes for d in devices.values()),
                "quiet_after_ms": quiet_after_ms, "errors": self.errors}
