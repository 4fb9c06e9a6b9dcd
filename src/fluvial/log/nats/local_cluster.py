"""A NATS JetStream cluster on this machine, from the installed ``nats-server``: for
``fluvial demo --cluster``, the fault tests and trying a replicated log without servers.

Each node is one ``nats-server`` process on loopback with its own configuration file,
client port, route port and store directory under ``root``; the nodes route to each other
and elect a JetStream meta leader within a few seconds.  Kill one (:meth:`kill`, SIGKILL)
and start it again (:meth:`start`): it catches up from the others.

    with LocalNatsCluster(Path("/tmp/nats"), nodes=3) as cluster:
        log = open_log(cluster.url("demo", replicas=3))
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from fluvial.errors import ConfigError

__all__ = ["LocalNatsCluster", "free_ports"]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalNatsCluster:
    """``nodes`` nats-server processes forming one JetStream cluster on loopback.

    Args:
        root: Where the configuration files, logs and store directories go (created).
        nodes: How many servers (3 for R3 streams: a quorum survives one node down).
        name: The cluster's name.
        binary: The ``nats-server`` executable (default: the one on PATH).

    Raises:
        ConfigError: ``nats-server`` is not installed (the message says how to get it).
    """

    def __init__(self, root: Path, *, nodes: int = 3, name: str = "fluvial", binary: str | None = None) -> None:
        found = binary or shutil.which("nats-server")
        if found is None:
            raise ConfigError("nats-server is not installed: install it (Debian: apt-get install nats-server; "
                              "or a release from the NATS project) and put it on PATH")
        if nodes < 1:
            raise ConfigError(f"a cluster needs at least one node, got {nodes}")
        self.binary = found
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * nodes)
        self.client_ports, self.route_ports = ports[:nodes], ports[nodes:]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        for i, node in enumerate(self.names):
            cluster = (f"cluster {{ name: {name}, listen: 127.0.0.1:{self.route_ports[i]}, routes: [{routes}] }}\n"
                       if nodes > 1 else "")
            (self.root / f"{node}.conf").write_text(
                f"server_name: {node}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
                f'jetstream {{ store_dir: "{self.root / node}" }}\n{cluster}')

    @property
    def names(self) -> list[str]:
        """The nodes' server names: ``n1``, ``n2``, ..."""
        return [f"n{i + 1}" for i in range(len(self.client_ports))]

    @property
    def servers(self) -> list[str]:
        """``127.0.0.1:PORT`` of every node."""
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def url(self, name: str, *, replicas: int | None = None) -> str:
        """The ``nats://`` log URL of a log called ``name`` on every node of this cluster
        (``replicas``: of each stream; default as many as nodes, at most 3)."""
        replicas = min(3, len(self.client_ports)) if replicas is None else replicas
        return f"nats://{','.join(self.servers)}/{name}?replicas={replicas}"

    def start(self, node: str | None = None) -> None:
        """Start ``node`` (default: every node not running)."""
        for name in [node] if node is not None else self.names:
            if name in self.procs and self.procs[name].poll() is None:
                continue
            with (self.root / f"{name}.log").open("ab") as out:
                self.procs[name] = subprocess.Popen([self.binary, "-c", str(self.root / f"{name}.conf")],
                                                    stdout=out, stderr=out)

    def kill(self, node: str) -> None:
        """SIGKILL ``node`` (no shutdown: a crash)."""
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 10 s)."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every running node accepts clients and JetStream answers (a meta leader)."""
        deadline = time.monotonic() + timeout
        while not asyncio.run(self._jetstream_answers()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the NATS cluster in {self.root} was not ready within {timeout:g} s "
                                   f"(see the nodes' logs there)")
            time.sleep(0.25)

    async def _jetstream_answers(self) -> bool:
        import nats

        try:
            nc = await nats.connect([f"nats://{s}" for s in self.servers], connect_timeout=1,
                                    allow_reconnect=False)
        except Exception:   # not listening yet
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except Exception:   # no meta leader yet
            return False
        finally:
            await nc.close()

    def leader(self, stream: str, timeout: float = 60.0) -> str:
        """The node leading ``stream``, once it has one (after a kill the election takes a while)."""
        deadline = time.monotonic() + timeout
        while (found := asyncio.run(self._leader(stream))) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream} has no leader after {timeout:g} s")
            time.sleep(0.5)
        return found

    async def _leader(self, stream: str) -> str | None:
        import nats

        try:
            nc = await nats.connect([f"nats://{s}" for s in self.servers], connect_timeout=2)
        except Exception:
            return None
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            return str(info.cluster.leader) if info.cluster is not None and info.cluster.leader else None
        except Exception:
            return None
        finally:
            await nc.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
