"""Per-connection limits of ``fluvial serve``: timeouts and a connection limit, below the ASGI app.

uvicorn (httptools) on its own keeps a connection open as long as its peer
trickles bytes: a request line sent one byte a minute, a body that never ends,
or a connection that sends nothing at all; and its ``limit_concurrency``
answers 503 to everyone once idle connections fill it. :class:`ConnectionGuard`
makes a uvicorn protocol class that adds, per connection:

* **header timeout**: a request line and its headers must arrive within
  ``header_timeout_s`` of the connection opening (or of the first byte of a
  later request), else the connection is closed;
* **body timeout**: the whole body within ``body_timeout_s`` of its headers.
  Ingest answers 408 itself at that time (:func:`fluvial.server.limits.read_body`);
  the guard closes the connection :data:`BODY_GRACE_S` later whatever the route,
  also when the answer went out before the body (a refused body still trickling);
* **keep-alive**: an idle connection is closed after ``keep_alive_s`` (uvicorn's
  timer, which any byte resets; the guard's own deadline, ``keep_alive_s`` +
  ``header_timeout_s``, does not reset);
* **a connection limit**: beyond ``max_connections`` open connections, a new one
  closes the connection idle the longest (no request in progress; oldest first),
  as nginx reuses its keep-alive connections, so idle connections never lock out
  requests; with none idle, the new connection gets ``503`` with ``Retry-After``
  and is closed. The limit is kept below the open-file limit
  (:func:`raise_open_files_limit` raises the soft limit to the hard one at start),
  so the server never runs out of file descriptors;
* **accepting under load**: uvloop (libuv) accepts one connection per turn of the
  event loop, and under load a turn takes long: new connections waited in the
  kernel's queue until the load ended (24 s in a 20 s overload). Each accepted
  connection therefore accepts every other one waiting (``listeners``, set by
  ``fluvial serve``) and hands it to the loop like uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

__all__ = ["BODY_GRACE_S", "FD_RESERVE", "ConnectionGuard", "raise_open_files_limit"]

BODY_GRACE_S = 2.0
"""How long after ``body_timeout_s`` the guard closes a connection whose body is still arriving."""
FD_RESERVE = 256
"""File descriptors kept for everything but connections (log segments, SQLite, pipes, the event loop)."""
REFUSE_SLACK = 64
"""Connections beyond the limit that may wait for their 503 at once; more are closed at once."""
REFUSED_WAIT_S = 2.0
"""How long a connection beyond the limit may take to send the request its 503 answers."""
_logger = logging.getLogger("fluvial.server")


def raise_open_files_limit() -> int | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the soft limit now
    (None where there is no such limit)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


class ConnectionGuard:
    """The connection limit and timeouts of one server (see the module).

    Args:
        limits: The ``[limits]`` settings (:class:`~fluvial.settings.LimitsSettings`).

    Attributes:
        max_connections: The limit in force (``max_connections``, or less to fit the open-file limit).
        closed: Connections the guard closed, by reason (``header_timeout``, ``body_timeout``,
            ``idle_timeout``, ``evicted_idle``, ``over_limit``).
        refused: Connections answered 503 because the limit was reached with none idle.
    """

    def __init__(self, limits: Any) -> None:
        self.max_connections: int = limits.max_connections
        self.configured = limits.max_connections
        self.header_timeout_s: float = limits.header_timeout_s
        self.body_timeout_s: float = limits.body_timeout_s + BODY_GRACE_S
        self.keep_alive_s: float = limits.keep_alive_s
        self.closed: Counter[str] = Counter()
        self.refused = 0
        self.open_files: int | None = None
        self._connections: set[Any] = set()
        self.listeners: list[Any] = []      # the listening sockets (accepted from in bursts, see accept_pending)
        self._accepting = False
        self._handing_over: set[asyncio.Task[Any]] = set()
        self._idle: dict[Any, None] = {}   # connections without a request in progress, oldest first

    def fit(self, open_files: int | None) -> None:
        """Keep the limit below ``open_files`` (the soft RLIMIT_NOFILE), leaving room for everything else."""
        self.open_files = open_files
        if open_files is None:
            return
        room = max(16, open_files - FD_RESERVE - REFUSE_SLACK)
        if room < self.max_connections:
            _logger.warning("max_connections is %d instead of %d: the open-file limit is %d (raise it with "
                            "ulimit -n to allow more)", room, self.max_connections, open_files)
            self.max_connections = room

    def snapshot(self) -> dict[str, Any]:
        return {"open": len(self._connections), "idle": len(self._idle), "max": self.max_connections,
                "open_files_limit": self.open_files, "refused": self.refused,
                "closed": dict(sorted(self.closed.items())),
                "header_timeout_s": self.header_timeout_s, "body_timeout_s": self.body_timeout_s - BODY_GRACE_S,
                "keep_alive_s": self.keep_alive_s}

    # -- called by the protocol -----------------------------------------------------------------

    def opened(self, conn: Any, connections: set[Any]) -> bool:
        """A connection opened; False when it must be refused (the limit is reached, none idle)."""
        self._connections = connections
        over = len(connections) - self.max_connections
        if over <= 0:
            return True
        if self._idle:
            victim = next(iter(self._idle))
            self.forget(victim)
            self.closed["evicted_idle"] += 1
            victim.transport.close()
            return True
        if over > REFUSE_SLACK:  # too many wait for their 503 already: no fd to spare
            self.closed["over_limit"] += 1
            conn.transport.close()
        else:
            self.refused += 1
        return False

    def accept_pending(self, conn: Any) -> None:
        """Accept every connection waiting in the listening sockets' queues now.

        uvloop (libuv) accepts one connection per turn of the event loop; under load a turn takes
        long, so new connections would wait seconds in the kernel's queue.
        """
        if self._accepting or not self.listeners:
            return
        self._accepting = True
        try:
            factory = _factory_like(conn)
            for listener in self.listeners:
                for _ in range(REFUSE_SLACK * 16):  # (bounded: the rest at the next connection)
                    try:
                        sock, _ = listener.accept()
                    except OSError:  # none waiting (EAGAIN), or the server is closing
                        break
                    sock.setblocking(False)
                    task = conn.loop.create_task(conn.loop.connect_accepted_socket(factory, sock,
                                                                                   ssl=conn.config.ssl))
                    self._handing_over.add(task)
                    task.add_done_callback(self._handed_over)
        finally:
            self._accepting = False

    def _handed_over(self, task: asyncio.Task[Any]) -> None:
        self._handing_over.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.warning("a connection accepted by the server could not be set up: %s", task.exception())

    def idle(self, conn: Any) -> None:
        self._idle.pop(conn, None)
        self._idle[conn] = None

    def busy(self, conn: Any) -> None:
        self._idle.pop(conn, None)

    def forget(self, conn: Any) -> None:
        self._idle.pop(conn, None)

    def protocol(self) -> type[asyncio.Protocol]:
        """The uvicorn HTTP protocol class that enforces this guard (``uvicorn.Config(http=...)``)."""
        return _guarded_protocol(self)


def _factory_like(conn: Any) -> Any:
    """A protocol factory making connections like ``conn`` (same class, config and server state)."""
    cls, config, state, app_state = type(conn), conn.config, conn.server_state, conn.app_state
    return lambda: cls(config=config, server_state=state, app_state=app_state)


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    """The answer of a connection beyond the limit."""
    body = (b'{"error":"the server has too many open connections: send again after Retry-After",'
            b'"status":503}')
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the guard's deadlines and connection limit."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._deadline_at = 0.0
            self._in_body = False

        # -- deadlines ----------------------------------------------------------------------------
        def _arm(self, seconds: float, reason: str) -> None:
            self._disarm()
            self._deadline_at = self.loop.time() + seconds
            self._deadline = self.loop.call_later(seconds, self._expired, reason)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, reason: str) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                guard.closed[reason] += 1
                guard.forget(self)
                self.transport.close()

        def _wait_for_request(self, seconds: float, reason: str) -> None:
            guard.idle(self)
            self._arm(seconds, reason)

        # -- the connection -------------------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard.accept_pending(self)
            if guard.opened(self, self.connections):
                self._wait_for_request(guard.header_timeout_s, "header_timeout")
            elif not transport.is_closing():
                self.app = _refuse
                self._arm(min(guard.header_timeout_s, REFUSED_WAIT_S), "over_limit")

        def connection_lost(self, exc: Exception | None) -> None:
            guard.forget(self)
            self._disarm()
            super().connection_lost(exc)

        # -- the parser's steps ---------------------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            left = self._deadline_at - self.loop.time() if self._deadline is not None else guard.header_timeout_s
            if self.app is not _refuse and left > guard.header_timeout_s:
                self._arm(guard.header_timeout_s, "header_timeout")

        def on_headers_complete(self) -> None:
            guard.busy(self)
            self._in_body = True
            if self.app is not _refuse:
                self._arm(guard.body_timeout_s, "body_timeout")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_body = False
            if self.app is _refuse:
                return
            self._disarm()
            if self.cycle is not None and self.cycle.response_complete:  # answered before its body was read
                self._wait_for_request(guard.keep_alive_s + guard.header_timeout_s, "idle_timeout")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self._in_body and not self.transport.is_closing() and self.app is not _refuse:
                self._wait_for_request(guard.keep_alive_s + guard.header_timeout_s, "idle_timeout")

    return GuardedHttpToolsProtocol
