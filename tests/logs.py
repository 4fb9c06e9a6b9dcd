"""Log backends for tests: the ``log_backend`` fixture (tests/conftest.py) runs a test on each.

``file``: a LocalLog under the test's tmp_path. ``nats``: a log on the NATS JetStream
server at ``FLUVIAL_TEST_NATS`` (default ``127.0.0.1:4222``) under a fresh random NAME,
its streams deleted after the test. Without a reachable server the ``nats`` variant skips
in one line, and fails under ``FLUVIAL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fluvial.backends import open_log
from fluvial.config import LogConfig
from fluvial.log.base import LogReader

NATS_SERVER = os.environ.get("FLUVIAL_TEST_NATS", "127.0.0.1:4222")
REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"


def nats_problem(server: str = NATS_SERVER) -> str | None:
    """Why no NATS server answers at ``server`` (None when one does)."""
    host, _, port = server.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError as exc:
        return f"no NATS server at {server} ({exc.strerror or exc}); start nats-server -js"
    return None


def nats_or_skip(server: str = NATS_SERVER) -> None:
    """Skip the calling test in one line when no NATS server answers (fail when required)."""
    why = nats_problem(server)
    if why is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{why} (FLUVIAL_REQUIRE_SERVICES=1)")
        pytest.skip(why)


ANCHOR = "fluvialtest-anchor"
_anchored: set[str] = set()


def anchor_stream(server: str = NATS_SERVER) -> None:
    """Keep one stream on the shared server for good (created once, never deleted).

    nats-server 2.9.10 removes the account's ``streams`` directory when its last stream is
    deleted; a stream created at that moment by another test process fails with
    ``error creating store for stream`` (10049: "mkdir .../streams/NAME: no such file or
    directory"). With a stream that always exists the directory never empties.
    """
    if server in _anchored:
        return
    import nats
    from nats.js.api import StreamConfig
    from nats.js.errors import BadRequestError

    async def run() -> None:
        nc = await nats.connect([f"nats://{server}"], connect_timeout=2, allow_reconnect=False)
        try:
            with contextlib.suppress(BadRequestError):   # it exists already (another test process made it)
                await nc.jetstream().add_stream(StreamConfig(name=ANCHOR, subjects=[f"{ANCHOR}.none"]))
        finally:
            await nc.close()

    asyncio.run(run())
    _anchored.add(server)


def fresh_nats_url(server: str = NATS_SERVER, replicas: int = 1) -> str:
    """A ``nats://`` URL under a new random NAME (no stream of it exists)."""
    anchor_stream(server)
    query = f"?replicas={replicas}" if replicas != 1 else ""
    return f"nats://{server}/t{uuid.uuid4().hex[:12]}{query}"


def delete_streams(url: str) -> None:
    """Delete every stream of the log at ``url`` (``NAME-*``)."""
    import nats

    from fluvial.log.nats import parse_url

    address = parse_url(url)

    async def run() -> None:
        nc = await nats.connect(list(address.servers), connect_timeout=2, allow_reconnect=False,
                                max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name and info.config.name.startswith(address.name + "-"):
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    asyncio.run(run())


@dataclass
class LogBackend:
    """Opens the same log again and again (as writer or reader) on one backend."""

    name: str
    url: str

    def open(self, *, partitions: int | None = None, readonly: bool = False,
             segment_bytes: int = 64 * 1024 * 1024) -> Any:   # LocalLog | NatsLog: a Log, closeable
        config = LogConfig(partitions=partitions, fsync="never", segment_bytes=segment_bytes)
        return open_log(self.url, config=config, readonly=readonly)

    def reader(self) -> LogReader:
        return open_log(self.url, readonly=True)


def make_backend(name: str, tmp_path: Path) -> LogBackend:
    if name == "file":
        return LogBackend("file", f"file://{tmp_path / 'log'}")
    nats_or_skip()
    return LogBackend("nats", fresh_nats_url())
