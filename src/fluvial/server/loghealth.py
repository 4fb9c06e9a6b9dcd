"""Damage on disk, told where operators look: ``/healthz`` and the server's start.

Opening the log checks every batch header, but the payload checksums of sealed
segments only when a batch is read; damage in a sealed segment (a payload, a
header, a missing file) does not stop it: a damaged header is stepped around
with an error line in the server's log (:mod:`fluvial.log.segment`), and
ingest keeps working (appends go to the active segment). :class:`LogHealth`
therefore verifies the checksums of both logs in a background thread once the
server has started, and again (at most every :attr:`LogHealth.RECHECK_S`)
after a batch run or a speed layer fails. Its :meth:`LogHealth.problems` are
sentences for ``/healthz``: partitions and offsets, what to run, never a file
path.

A log that cannot be opened at all (damage in the active segment before its
last batch, segment files that overlap) stops the start: :func:`open_logs`
says which commands find and repair it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fluvial.errors import CorruptLogError

__all__ = ["LogHealth", "open_logs"]

_logger = logging.getLogger("fluvial.server")
_ADVICE = "run `fluvial log verify` then `fluvial log salvage`"


def open_logs(ws: Any) -> tuple[Any, Any]:
    """The event log and the dead-letter log of a :class:`~fluvial.workspace.Workspace`.

    Raises:
        CorruptLogError: One of them is damaged where opening checks; the message names
            the commands that find the damage and repair it.
    """
    try:
        return ws.log, ws.dead_letters
    except CorruptLogError as exc:
        ws.close()
        home = f"fluvial --data-dir {ws.path}"
        raise CorruptLogError(
            f"the server cannot open its log: {exc} To keep every intact record instead: stop anything "
            f"writing to {ws.path}, run `{home} log verify` to see every damaged batch, then "
            f"`{home} log salvage` (it moves the damaged batches to {ws.path}/log-quarantine with a report "
            "and keeps the offsets), and start the server again") from exc


class LogHealth:
    """Verifies the logs of a running server in the background; see the module docstring.

    Args:
        server: The :class:`~fluvial.server.core.Server` (its data directory, batch
            statistics and speed runners).
    """

    RECHECK_S = 10.0
    """Shortest time between two checks caused by failures (or 20 times what the last check took,
    if longer: a big log is not read again and again while a speed layer keeps failing)."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._found: list[Any] = []  # verify.Problem, replaced as a whole by each check
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fluvial-log-health", daemon=True)
        self._failures = -1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def problems(self) -> list[str]:
        """What ``/healthz`` should say: one sentence per damaged partition, then batch runs
        that fail on it. Empty while the logs are intact (or not checked yet)."""
        found = self._found
        if not found:
            return []
        out = [_sentence(log, partition, problems) for (log, partition), problems in _by_partition(found).items()]
        for name, stats in sorted(self._server.batch.stats.items()):
            if stats.get("last_status") == "failed":
                out.append(f"batch layer {name}: the last run failed; the log it reads is damaged, {_ADVICE}")
        return out

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        started = time.monotonic()
        last = self._check()
        pause = max(self.RECHECK_S, 20 * (last - started))
        while not self._stop.wait(1.0):
            failures = self._failure_count()
            if failures != self._failures and time.monotonic() - last >= pause:
                started = time.monotonic()
                last = self._check()
                pause = max(self.RECHECK_S, 20 * (last - started))

    def _failure_count(self) -> int:
        batch = sum(s.get("failures", 0) for s in list(self._server.batch.stats.values()))
        return batch + sum(getattr(r, "errors", 0) for r in list(self._server.speed.values()))

    def _check(self) -> float:
        from fluvial.log.verify import SNAPSHOT, verify

        self._failures = self._failure_count()
        try:
            report = verify(self._server.data_dir, mode="checksums")
        except Exception:  # never take the server down: say so in its log
            _logger.exception("checking the logs of %s failed", self._server.data_dir)
            return time.monotonic()
        self._found = [p for p in report.problems if p.file != SNAPSHOT]  # a snapshot is rebuilt, nothing lost
        for p in self._found:
            _logger.error("log damage: %s partition %s, %s, bytes %s, offsets %s: %s; %s",
                          p.log, p.partition, p.file, p.byte_range, p.offsets, p.what, _ADVICE)
        return time.monotonic()


def _by_partition(found: list[Any]) -> dict[tuple[str, int | None], list[Any]]:
    out: dict[tuple[str, int | None], list[Any]] = {}
    for p in found:
        out.setdefault((p.log, p.partition), []).append(p)
    return out


def _sentence(log: str, partition: int | None, problems: list[Any]) -> str:
    """``partition 2: damaged batch in a sealed segment (offsets [1200, 1300)); run ...``."""
    where = ("dead-letter log" if log == "dead-letters" else
             "event log" if partition is None else f"partition {partition}")
    n = len(problems)
    sealed = all(p.sealed for p in problems)
    segment = ("a sealed segment" if n == 1 else "sealed segments") if sealed else "the active segment"
    what = "damaged batch" if n == 1 else f"{n} damaged batches"
    spans = [p.offsets for p in problems if p.offsets is not None]
    offsets = "" if not spans else " (offsets " + ", ".join(
        f"[{a}, {'?' if b is None else b})" for a, b in spans[:3]) + (", ..." if len(spans) > 3 else "") + ")"
    return f"{where}: {what} in {segment}{offsets}; {_ADVICE}"
