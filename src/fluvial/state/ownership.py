"""Who may write what: ownership epochs (leases) that fence stale writers.

Every runner that writes a pipeline's state (a stream runner's checkpoint and
realtime rows, a replay's new version, a batch run's publish) first *claims*
a resource in the view store -- ``stream:NAME``, ``batch-NAME``, ... -- and
gets a :class:`Lease`: the resource, an **epoch** and the owner.  Each of its
commits is conditional (``Txn.fence(lease)``): it goes through only while the
store still holds that epoch for the resource, in the same transaction as the
writes it guards; otherwise :class:`~fluvial.errors.LeaseLost` voids it.

A claim succeeds when nobody holds the resource, when the holder's lease ran
out (it was not renewed for ``lease_ms``: a paused, partitioned or dead
process), when the holder is a process of this host that no longer runs
(``kill -9``: no need to wait), or with ``take_over``.  Each claim writes the
next epoch, so a holder that wakes up after being replaced -- a *zombie* --
can never commit again: its epoch is gone for good (epochs only grow; a
released resource keeps its last epoch).  Otherwise the claim is refused with
:class:`~fluvial.errors.OwnedElsewhere`, which names the holder: pid, host,
command and since when.

The same contract fits every store: a row per resource with a compare-and-set
on its epoch (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR
UPDATE``; Cassandra ``UPDATE ... IF epoch = ?``).  Clocks matter only for
*liveness* (when a silent holder counts as gone), never for safety: a commit
is checked against the epoch inside the store.

:class:`Ownership` keeps a lease alive from a thread of its own (renewing it
every ``lease_ms / 4`` on a connection of its own), so a long micro-batch does
not lose it; a process that is paused (``SIGSTOP``, a long GC, a VM freeze)
stops renewing, and a rival may take over once the lease runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Self

from fluvial.errors import ConfigError, LeaseLost, OwnedElsewhere, StoreError

__all__ = ["DEFAULT_LEASE_MS", "Holder", "Lease", "Owner", "Ownership", "claim", "exclusive"]

DEFAULT_LEASE_MS = 10_000
"""How long a silent holder keeps a resource before a rival may claim it."""
_logger = logging.getLogger("fluvial.state")


@dataclass(frozen=True)
class Owner:
    """The process holding (or asking for) a resource."""

    pid: int
    host: str
    command: str            # what runs: "fluvial run --mode stream", "fluvial serve", ...
    started: int | None     # the process's start time (Linux: clock ticks since boot), against pid reuse

    @classmethod
    def this_process(cls, command: str | None = None) -> Owner:
        if command is None:
            args = [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
            command = " ".join(args)[:200]
        return cls(os.getpid(), socket.gethostname(), command, _process_start(os.getpid()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Owner:
        return cls(int(data["pid"]), str(data["host"]), str(data.get("command", "")),
                   None if data.get("started") is None else int(data["started"]))

    def gone(self) -> bool:
        """Whether this is a process of this host that no longer runs (its lease need not run out)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        started = _process_start(self.pid)
        return self.started is not None and started is not None and started != self.started

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command})"


@dataclass(frozen=True)
class Lease:
    """A claim on ``resource`` at ``epoch``: commits through ``Txn.fence(lease)`` hold while it does."""

    resource: str
    epoch: int
    owner: Owner
    lease_ms: int


@dataclass(frozen=True)
class Holder:
    """What the store knows of a resource's holder."""

    resource: str
    epoch: int
    owner: Owner | None      # None: released
    since_ms: int            # when this epoch was claimed
    renewed_ms: int          # last renewal (a commit or a heartbeat)
    lease_ms: int

    def expired(self, now_ms: int) -> bool:
        return self.owner is None or now_ms > self.renewed_ms + self.lease_ms

    def claimable(self, now_ms: int) -> bool:
        """Free, ran out, or held by a dead process of this host."""
        return self.expired(now_ms) or (self.owner is not None and self.owner.gone())

    def describe(self, now_ms: int) -> str:
        if self.owner is None:
            return f"{self.resource!r} is free (last epoch {self.epoch})"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since_ms / 1000))
        ago = max(0, now_ms - self.renewed_ms) / 1000
        return (f"{self.resource!r} is held by {self.owner.describe()} since {since} (epoch {self.epoch}; "
                f"last heard of {ago:.1f} s ago, lease {self.lease_ms / 1000:g} s)")


def refusal(holder: Holder, now_ms: int, *, hint: str) -> OwnedElsewhere:
    return OwnedElsewhere(f"{holder.describe(now_ms)}. {hint}", holder=holder)


def claim(store: Any, resource: str, owner: Owner | None = None, *, lease_ms: int = DEFAULT_LEASE_MS,
          take_over: bool = False, wait_s: float = 0.0, hint: str | None = None,
          on_wait: Any = None, stop: threading.Event | None = None) -> Lease:
    """Claim ``resource`` in ``store``; wait up to ``wait_s`` for its holder to go (or
    until ``stop`` is set); ``on_wait(exc)`` is called once when the wait begins.

    Raises:
        OwnedElsewhere: Another live process holds it (after ``wait_s``), naming it.
    """
    if lease_ms <= 0:
        raise ConfigError(f"lease_ms must be > 0, got {lease_ms}")
    owner = owner or Owner.this_process()
    hint = hint or "Stop it, wait for it to finish, or take it over."
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return store.claim(resource, owner, lease_ms=lease_ms, take_over=take_over, hint=hint)
        except OwnedElsewhere as exc:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise
            if not told and on_wait is not None:
                on_wait(exc)
                told = True
            pause = max(0.01, min(0.25, deadline - time.monotonic()))
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)


class Ownership:
    """A claimed lease, kept alive by a heartbeat thread until :meth:`release`.

    Args:
        store: The store the lease is in (its :meth:`reopen` gives the heartbeat
            thread a connection of its own; a store that cannot be reopened is
            renewed only by the commits made through it).
        lease: What :func:`claim` returned.

    Attributes:
        lost: Set (with the reason) once the store says another process took over.
    """

    def __init__(self, store: Any, lease: Lease) -> None:
        self.store = store
        self.lease = lease
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        reopen = getattr(store, "reopen", None)
        if reopen is not None:
            self._thread = threading.Thread(target=self._beat, args=(reopen,), daemon=True,
                                            name=f"fluvial-lease-{lease.resource}")
            self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the heartbeat found the lease taken over."""
        if self.lost is not None:
            raise self.lost

    def release(self) -> None:
        """Stop renewing and free the resource (if this process still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.lost is None:
            try:
                self.store.release(self.lease)
            except StoreError as exc:  # it runs out by itself
                _logger.warning("could not release %r: %s", self.lease.resource, exc)

    def _beat(self, reopen: Any) -> None:
        interval = max(0.05, self.lease.lease_ms / 4000)
        store = None
        try:
            while not self._stop.wait(interval):
                if getattr(self.store, "closed", False):
                    return   # its store was closed without a release: the lease runs out by itself
                try:
                    if store is None:
                        store = reopen()
                        if store is None:
                            return   # cannot be reopened (in memory): the commits renew it
                    store.renew(self.lease)
                except LeaseLost as exc:
                    self.lost = exc
                    _logger.warning("%s", exc)
                    return
                except StoreError as exc:  # a busy or full disk: try again; the lease may run out meanwhile
                    _logger.warning("could not renew the lease on %r: %s", self.lease.resource, exc)
        finally:
            if store is not None:
                store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def exclusive(store: Any, resource: str, *, wait_s: float = 0.0, lease_ms: int = DEFAULT_LEASE_MS,
              hint: str | None = None) -> Iterator[Lease]:
    """Hold ``resource`` for the duration of the block (waiting up to ``wait_s`` for it),
    renewed by a heartbeat; yields the lease for ``Txn.fence``."""
    lease = claim(store, resource, lease_ms=lease_ms, wait_s=wait_s, hint=hint)
    with Ownership(store, lease) as owned:
        yield owned.lease


def _process_start(pid: int) -> int | None:
    """The start time of a process (Linux: field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
