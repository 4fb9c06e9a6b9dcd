"""The single log writer of ``fluvial serve``: group commit, isolation, recovery.

Requests hand their valid events (and their dead letters) to one writer
thread.  The thread takes everything queued since its last append and writes
it as ONE ``log.append`` call: one fsync (per the log's fsync policy) covers
every request of the group, as in Kafka's or PostgreSQL's group commit.  A
request is answered only when the append that holds its events returned, so
an acknowledged event is in the log.

**Isolation.** A group fails as a whole only for a cause every request
shares (the disk).  When the log refuses a group for a cause tied to some
events (any error but :class:`~fluvial.errors.LogError`: the log wrote and
recorded nothing), every request of the group is appended on its own, so
one hostile request cannot make honest ones fail.

**Recovery.** When a write fails (a full disk, an I/O error), the writer
answers new work at once with :class:`LogUnavailable` (HTTP 507 for a full
disk, else 503, with the seconds to wait) and calls ``log.recover()`` with
backoff (:data:`RETRY_MIN_S` doubling to :data:`RETRY_MAX_S`) until it
succeeds, then takes appends again: no restart.  The events a failed append
wrote completely are recorded as stored by the recovery, so a device's retry
is answered "duplicate"; nothing else of it is recorded.

**Queue.** :attr:`LogWriter.queued_events` and :meth:`LogWriter.queue_wait_s`
(how long the oldest waiting request has waited) tell ingest when to shed
load (:mod:`fluvial.server.limits`) before the queue makes latency and
memory grow.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fluvial.errors import LogError
from fluvial.events.envelope import Event
from fluvial.log.deadletter import DeadLetter

__all__ = ["RETRY_MAX_S", "RETRY_MIN_S", "Appended", "LogUnavailable", "LogWriter"]

RETRY_MIN_S = 0.1
"""First wait before ``log.recover()`` is tried again after a failure."""
RETRY_MAX_S = 2.0
"""Longest wait between two recovery attempts."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_logger = logging.getLogger("fluvial.server")

_Item = tuple[Sequence[Event], Sequence[DeadLetter], "Future[Appended]", float]  # ..., time.monotonic() queued


@dataclass(frozen=True)
class Appended:
    """What one request's events became: ``accepted`` new, ``duplicates`` already stored."""

    accepted: int
    duplicates: int


class LogUnavailable(LogError):
    """The log writer takes no events now; send them again after ``retry_after_s``.

    Attributes:
        reason: What is wrong, in words for any caller (no file paths).
        disk_full: The disk (or the quota) is full: HTTP 507 rather than 503.
        retry_after_s: Whole seconds until the next recovery attempt (at least 1).
    """

    def __init__(self, reason: str, *, disk_full: bool, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.disk_full = disk_full
        self.retry_after_s = retry_after_s


class LogWriter:
    """Appends submitted events from one thread, grouping concurrent submissions.

    Args:
        log: The event log (opened for writing): ``append(events, decoded=True)`` and ``recover()``.
        dead_letters: The dead-letter log (opened for writing): ``append(letters)`` and ``recover()``.
        max_group_events: At most this many events per ``log.append``.
        retry_min_s: First wait before a recovery attempt; doubles up to ``retry_max_s``.
        retry_max_s: Longest wait between recovery attempts.

    Attributes:
        appends: Groups appended.
        failures: Times a write failed and the writer stopped taking events.
        recoveries: Times it took events again by itself.
        queued_events: Events submitted and not yet taken into a group.
    """

    def __init__(self, log: Any, dead_letters: Any, *, max_group_events: int = 200_000,
                 retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self.log = log
        self.dead_letters = dead_letters
        self.max_group_events = max_group_events
        self.appends = 0
        self.failures = 0
        self.recoveries = 0
        self.queued_events = 0
        self._retry_min_s, self._retry_max_s = retry_min_s, retry_max_s
        self._cause: str | None = None       # why writes fail, without paths (None: healthy)
        self._disk_full = False
        self._since = 0.0                    # time.monotonic() of the failure
        self._attempts = 0                   # failed attempts since the last good append
        self._next_try = 0.0
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fluvial-log-writer", daemon=True)
        self._thread.start()

    # -- what callers see -------------------------------------------------------------------

    @property
    def failed(self) -> str | None:
        """Why the writer takes no events now, in words for an operator (no paths); None if it does."""
        if self._cause is None:
            return None
        waited = time.monotonic() - self._since
        advice = ("free space on the disk of the data directory" if self._disk_full
                  else "check the disk of the data directory and the server log")
        return (f"cannot append to the event log for {waited:.0f} s: {self._cause}; {advice}. "
                f"Ingest resumes by itself (next try in {self._retry_after()} s)")

    def queue_wait_s(self) -> float:
        """How long the oldest request still waiting to be written has waited (0 when none waits)."""
        with self._cond:
            oldest = self._queue[0][3] if self._queue else None
        return 0.0 if oldest is None else max(0.0, time.monotonic() - oldest)

    def unavailable(self) -> LogUnavailable | None:
        """The error a request gets now if the writer takes no events; None if it takes them."""
        return None if self._cause is None else self._unavailable()

    def submit(self, events: Sequence[Event], letters: Sequence[DeadLetter] = ()) -> Future[Appended]:
        """Queue events and dead letters; the future resolves once they are written.

        While the writer is failing the future fails at once with :class:`LogUnavailable`.
        """
        future: Future[Appended] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            if self._cause is not None:
                future.set_exception(self._unavailable())
                return future
            self._queue.append((events, letters, future, time.monotonic()))
            self.queued_events += len(events)
            self._cond.notify()
        return future

    def close(self) -> None:
        """Write what is queued (or refuse it while failing), then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _unavailable(self) -> LogUnavailable:
        what = "the disk is full" if self._disk_full else "writes to the disk fail"
        return LogUnavailable(
            f"the event log cannot take events now ({what}: {self._cause}); these events are not "
            f"acknowledged: send them again in {self._retry_after()} s with the same device and seq "
            "(events already stored are answered as duplicates)",
            disk_full=self._disk_full, retry_after_s=self._retry_after())

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._next_try - time.monotonic()))

    # -- the writer thread ------------------------------------------------------------------

    def _take(self) -> list[_Item] | None:
        """The next group; ``[]`` when a recovery attempt is due; None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closed:
                if self._cause is None:
                    self._cond.wait()
                    continue
                wait = self._next_try - time.monotonic()
                if wait <= 0:
                    return []
                self._cond.wait(wait)
            if not self._queue:
                return None
            group = [self._queue.popleft()]
            size = len(group[0][0])
            while self._queue and size + len(self._queue[0][0]) <= self.max_group_events:
                item = self._queue.popleft()
                size += len(item[0])
                group.append(item)
            self.queued_events -= size
            return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            if self._cause is not None and time.monotonic() >= self._next_try:
                self._try_recover()
            if self._cause is not None:
                _fail(group, self._unavailable())
            elif group:
                self._write(group)

    def _write(self, group: list[_Item]) -> None:
        """Append one group; answer each of its requests."""
        events = [ev for evs, _, _, _ in group for ev in evs]
        try:
            positions = self.log.append(events, decoded=True).positions if events else []
        except LogError as exc:  # the log itself failed: every request shares the cause
            self._enter_failed(exc)
            _fail(group, self._unavailable())
            return
        except Exception as exc:  # tied to some request's events: the log wrote nothing
            if len(group) == 1:
                _logger.error("the log refused the events of one request: %s", exc)
                _fail(group, exc)
                return
            for item in group:  # alone, each honest request goes through
                if self._cause is not None:
                    _fail([item], self._unavailable())
                else:
                    self._write([item])
            return
        except BaseException as exc:  # KeyboardInterrupt...: answer everyone, then stop
            _fail(group, exc)
            raise
        self.appends += 1
        self._attempts = 0
        self._keep_letters(group)
        at = 0
        for evs, _, future, _ in group:
            mine = positions[at:at + len(evs)]
            at += len(evs)
            if future.done():
                continue  # its dead letters could not be kept: it was answered with the failure
            accepted = sum(1 for p in mine if p is not None)
            future.set_result(Appended(accepted, len(evs) - accepted))

    def _keep_letters(self, group: list[_Item]) -> None:
        """Append the group's dead letters; if that fails, the requests that had some fail."""
        letters = [letter for _, lts, _, _ in group for letter in lts]
        if not letters:
            return
        try:
            self.dead_letters.append(letters)
        except Exception as exc:
            self._enter_failed(exc)
            _fail([item for item in group if item[1]], self._unavailable())

    # -- failure and recovery -----------------------------------------------------------------

    def _enter_failed(self, exc: BaseException) -> None:
        self._cause, self._disk_full = _describe(exc)
        self._since = time.monotonic()
        self.failures += 1
        self._schedule_retry()
        _logger.error("the log writer takes no events until the log recovers: %s", exc)

    def _schedule_retry(self) -> None:
        wait = min(self._retry_max_s, self._retry_min_s * 2 ** min(self._attempts, 30))
        self._attempts += 1
        self._next_try = time.monotonic() + wait

    def _try_recover(self) -> None:
        try:
            self.log.recover()
            self.dead_letters.recover()
        except Exception as exc:
            self._cause, self._disk_full = _describe(exc)
            self._schedule_retry()
            if self._attempts in (1, 2, 4) or self._attempts % 30 == 0:
                _logger.warning("the event log is still failing (attempt %d): %s", self._attempts, exc)
            return
        _logger.warning("the log writer takes events again after %.1f s", time.monotonic() - self._since)
        self.recoveries += 1
        self._cause = None


def _fail(group: Sequence[_Item], exc: BaseException) -> None:
    for _, _, future, _ in group:
        if not future.done():
            future.set_exception(exc)


def _describe(exc: BaseException) -> tuple[str, bool]:
    """``(cause in words, disk full?)`` of a write failure, from its OSError (no paths)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            name = errno.errorcode.get(seen.errno, str(seen.errno))
            return f"{os.strerror(seen.errno)} ({name})", seen.errno in _DISK_FULL
        seen = seen.__cause__ or seen.__context__
    return f"the write failed ({type(exc).__name__})", False
