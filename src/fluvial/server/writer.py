"""The single log writer of ``fluvial serve``, with group commit.

Requests hand their valid events (and their dead letters) to one writer
thread.  The thread takes everything queued since its last append and writes
it as ONE ``log.append`` call: one fsync (per the log's fsync policy) covers
every request of the group, as in Kafka's or PostgreSQL's group commit.  A
request is answered only when the append that holds its events returned, so
an acknowledged event is in the log.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fluvial.events.envelope import Event
from fluvial.log.deadletter import DeadLetter

__all__ = ["Appended", "LogWriter"]


@dataclass(frozen=True)
class Appended:
    """What one request's events became: ``accepted`` new, ``duplicates`` already stored."""

    accepted: int
    duplicates: int


class LogWriter:
    """Appends submitted events from one thread, grouping concurrent submissions.

    Args:
        log: The event log (opened for writing).
        dead_letters: The dead-letter log (opened for writing).
        max_group_events: At most this many events per ``log.append``.
    """

    def __init__(self, log: Any, dead_letters: Any, *, max_group_events: int = 200_000) -> None:
        self.log = log
        self.dead_letters = dead_letters
        self.max_group_events = max_group_events
        self.appends = 0          # log.append calls (groups)
        self.failed: str | None = None
        self._queue: deque[tuple[Sequence[Event], Sequence[DeadLetter], Future[Appended]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fluvial-log-writer", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[Event], letters: Sequence[DeadLetter] = ()) -> Future[Appended]:
        """Queue events and dead letters; the future resolves once they are written."""
        future: Future[Appended] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            self._queue.append((events, letters, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> list[tuple[Sequence[Event], Sequence[DeadLetter], Future[Appended]]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            group = [self._queue.popleft()]
            size = len(group[0][0])
            while self._queue and size + len(self._queue[0][0]) <= self.max_group_events:
                item = self._queue.popleft()
                size += len(item[0])
                group.append(item)
            return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            events: list[Event] = []
            letters: list[DeadLetter] = []
            for evs, lts, _ in group:
                events.extend(evs)
                letters.extend(lts)
            try:
                if letters:
                    self.dead_letters.append(letters)
                positions = self.log.append(events, decoded=True).positions if events else []
                self.appends += 1
            except BaseException as exc:  # every waiting request learns it failed
                self.failed = str(exc)
                for _, _, future in group:
                    future.set_exception(exc)
                continue
            at = 0
            for evs, _, future in group:
                mine = positions[at:at + len(evs)]
                at += len(evs)
                accepted = sum(1 for p in mine if p is not None)
                future.set_result(Appended(accepted, len(evs) - accepted))
