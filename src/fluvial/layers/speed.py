"""The speed layer of a server: one stream runner thread per pipeline, restarted when it fails.

A runner that fails restarts from its checkpoint (committed work is never
redone, uncommitted work is); one that loses its lease to another process
waits as a standby until it can claim the pipeline again.
"""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluvial.errors import LeaseLost
from fluvial.layers.pipelines import Registered

if TYPE_CHECKING:
    from fluvial.config import StreamConfig
    from fluvial.engine.stream import StreamRunner
    from fluvial.workspace import Workspace

__all__ = ["SpeedRunner", "failure_reason"]

_logger = logging.getLogger("fluvial.server")


class SpeedRunner:
    """One pipeline on the local stream runner, in a thread, until stopped.

    The thread opens its own store connection and a read-only view of the log.
    If a micro-batch fails, the error is kept (``last_error``) and the runner
    restarts from its checkpoint after ``retry_s``: committed work is never
    redone twice, uncommitted work is redone. A full disk (the view store
    cannot commit) is such a failure: the runner retries until space returns.

    Attributes:
        last_error: Why it last failed (the root cause, with what to do about a full disk).
        errors: How many times it failed.
        failing: It failed and has not committed a micro-batch since.
        last_error_at: When it last failed, while :attr:`failing` (else 0.0): ``/healthz``
            says the speed layer is degraded until it commits again.
    """

    def __init__(self, reg: Registered, workspace: Callable[[], Workspace], config: StreamConfig, *,
                 retry_s: float = 1.0) -> None:
        self.reg = reg
        self._workspace = workspace   # opens the server's data directory (its log and store URLs)
        self.config = config          # a StreamConfig: micro-batching and the lease
        self.retry_s = retry_s
        self.runner: StreamRunner | None = None
        self.last_error: str | None = None
        self.errors = 0
        self._error_at = 0.0
        self._failed: StreamRunner | None = None  # the runner that failed last (None: no failure yet)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fluvial-speed-{reg.name}", daemon=True)

    def start(self) -> SpeedRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.runner.progress) if self.runner is not None else {}

    @property
    def failing(self) -> bool:
        """It failed, and no micro-batch has committed since (a new runner replaces a failed one)."""
        runner = self.runner
        if self._failed is None:
            return False
        return runner is self._failed or runner is None or not runner.progress.get("micro_batches")

    @property
    def last_error_at(self) -> float:
        return self._error_at if self.failing else 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            ws = self._workspace()
            try:
                # A standby while another process runs the pipeline (a `fluvial run`, another server):
                # the claim waits until it stops or goes silent, then goes on from its checkpoint.
                self.runner = ws.stream_runner(self.config, out=_NullOut(), wait_s=math.inf)
                self.runner.run(self.reg.pipeline, stop=self._stop)
            except LeaseLost as exc:   # another process took the pipeline over: wait for it again
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("speed layer of %s: %s", self.reg.name, exc)
            except Exception as exc:
                self.errors += 1
                self.last_error = failure_reason(exc, self.retry_s)
                self._error_at = time.time()
                self._failed = self.runner
                _logger.error("speed layer of %s failed, restarting from its checkpoint: %s\n%s",
                              self.reg.name, self.last_error, traceback.format_exc())
                self._stop.wait(self.retry_s)
            finally:
                ws.close()


def failure_reason(exc: BaseException, retry_s: float) -> str:
    """``Type: message`` of what made a micro-batch fail, from the root cause.

    A failed commit can surface as a later error raised while undoing it (SQLite
    rolls a transaction back by itself on a full disk, so the ROLLBACK after the
    failed COMMIT says "cannot rollback - no transaction is active"): the error
    it was handling is the cause. A full disk says what to do.
    """
    cause = exc
    while isinstance(cause, sqlite3.OperationalError) and "no transaction is active" in str(cause) \
            and cause.__context__ is not None:
        cause = cause.__context__
    full = next((e for e in _chain(cause) if _disk_full(e)), None)
    if full is None:
        return f"{type(cause).__name__}: {cause}"
    # the error of the disk itself, not the store's wrapping of it (which names the file)
    return (f"{type(full).__name__}: {full} (the disk of the data directory is full: free space; the speed "
            f"layer retries by itself every {retry_s:g} s)")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class _NullOut:
    """``print()`` sinks of served flows: the server has no terminal to print to."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
