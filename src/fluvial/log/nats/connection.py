"""A synchronous face on the asyncio NATS client: a private event loop on its own thread.

The :class:`~fluvial.log.base.Log` protocol is synchronous and nats-py is asyncio-only,
so :class:`Connection` runs one event loop on a daemon thread (``fluvial-nats``) and
every call submits a coroutine to it with :func:`asyncio.run_coroutine_threadsafe`,
waiting for the result. Callers never see the loop; a coroutine never blocks it.
nats-py is imported here, when a ``nats://`` log is opened, never by ``import fluvial``.

Connecting fails fast (every server tried once, a clear :class:`~fluvial.errors.LogError`
naming them and the ``--log`` flag); once connected, the client reconnects forever
(a restarted server or a cluster node going away is a pause, not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from fluvial.errors import LogError, MissingDependency

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["REQUEST_TIMEOUT_S", "Connection", "import_nats"]

T = TypeVar("T")
REQUEST_TIMEOUT_S = 5.0     # a JetStream API request or publish ack
CONNECT_TIMEOUT_S = 2.0


def import_nats() -> Any:
    """The ``nats`` package, or :class:`MissingDependency` naming the extra to install."""
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - the extra is in the test environment
        raise MissingDependency("a nats:// log needs nats-py: pip install 'fluvial[nats]'") from exc
    return nats


class Connection:
    """One NATS connection and its JetStream context, on a private event-loop thread.

    Args:
        servers: ``nats://host:port`` URLs (tried in this order).
        url: The log URL, for error messages.
    """

    def __init__(self, servers: tuple[str, ...], url: str) -> None:
        self.url = url
        self.servers = servers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fluvial-nats", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self.nc: Client = self.call(self._connect(), timeout=CONNECT_TIMEOUT_S * (len(servers) + 2))
        except BaseException:
            self._stop()
            raise
        self.js: JetStreamContext = self.nc.jetstream(timeout=REQUEST_TIMEOUT_S)

    async def _connect(self) -> Client:
        nats = import_nats()

        async def quiet(_exc: Exception) -> None:  # nats-py prints every failed attempt otherwise
            return None

        try:
            nc = await nats.connect(list(self.servers), connect_timeout=CONNECT_TIMEOUT_S,
                                    allow_reconnect=False, max_reconnect_attempts=1,
                                    dont_randomize=True, error_cb=quiet, reconnect_time_wait=0.25)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise LogError(f"--log {self.url}: cannot reach a NATS server at {', '.join(self.servers)} "
                           f"({type(exc).__name__}: {exc or 'no server answered'}); start nats-server "
                           "with JetStream (nats-server -js) or fix the servers in --log") from None
        # Connected: from now on a lost server is a pause. nats-py reads these options when a
        # connection drops (they are its public ``options``), so reconnect forever.
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        return nc  # type: ignore[no-any-return]

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop thread and return its result (or raise its exception)."""
        if self._closed:
            coro.close()
            raise LogError(f"the NATS log {self.url} is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise LogError(f"the NATS log {self.url}: no answer from {', '.join(self.servers)} "
                           f"within {timeout} s") from None

    def close(self) -> None:
        """Close the connection and stop the loop thread. Idempotent."""
        if self._closed:
            return
        with contextlib.suppress(Exception):  # the server may be gone already
            self.call(self.nc.close(), timeout=REQUEST_TIMEOUT_S)
        self._closed = True
        self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(REQUEST_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
