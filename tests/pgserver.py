"""A PostgreSQL server of a test's own, to kill and restart (the shared one on 5432 serves
every other test and is never touched).

``initdb`` and ``postgres`` come from Debian's ``postgresql`` package
(``/usr/lib/postgresql/N/bin``); as root they run as the ``postgres`` user (PostgreSQL
refuses to run as root).  The server runs in a session of its own, so that a kill takes the
postmaster and every backend at once, as a crash of the machine would.  Missing binaries
skip in one line -- or fail, with ``FLUVIAL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from stores import REQUIRE_SERVICES


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server on a free loopback port, in a fresh directory.

    Attributes:
        port: Its TCP port on 127.0.0.1.
        url: A store URL on its ``postgres`` database (add ``?schema=...``).
    """

    def __init__(self) -> None:
        bindir = _bin_dir()
        if bindir is None:
            reason = "PostgreSQL's server binaries (initdb, postgres) are not installed"
            if REQUIRE_SERVICES:
                pytest.fail(reason)
            pytest.skip(reason)
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="fluvial-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True, timeout=120, cwd=self.root, **self._user())

    def _cmd(self, program: str, *args: str) -> list[str]:
        return [str(self.bindir / program), *args]

    def _user(self) -> dict[str, object]:
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 -- the server keeps it
        self.proc = subprocess.Popen(
            self._cmd("postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                      "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=50",
                      "-c", "shared_buffers=16MB", "-c", "fsync=on"),
            stdout=log, stderr=log, start_new_session=True, cwd=self.root, **self._user())
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}: "
                                   f"{(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends (a crash: recovery replays the WAL)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._wait_gone()

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions are rolled back, clients disconnected."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # the postmaster itself: its fast shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._wait_gone()

    def _wait_gone(self) -> None:
        """Wait until no process of the server's session is left (a backend outliving its
        postmaster would keep the shared memory and stop a restart)."""
        if self.proc is None:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
