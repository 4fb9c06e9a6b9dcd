"""A Spark standalone cluster on loopback for tests: one master and N workers, started from
the pyspark package's ``bin/spark-class`` (no Spark installation, no container), stopped after.

Each worker has its own work directory (executor logs) and runs its executors with this
test process's environment (``PYTHONPATH``: the fluvial under test).  The cluster shares
no directory with the driver: executors get URLs only (``nats://``), never paths.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def java_major() -> int:
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return int((java.split('"')[1:2] or ["0"])[0].split(".")[0] or 0)


def java_home_without_unsafe_flag(directory: Path) -> Path:
    """A JAVA_HOME whose ``bin/java`` drops ``--sun-misc-unsafe-memory-access=allow``.

    PySpark 4's standalone launcher adds that flag to every executor command, and only
    JDK 23+ accepts it; JDK 17 refuses to start with it.  The flag only silences a JDK 23+
    warning, so dropping it changes nothing on JDK 17.
    """
    real = Path(shutil.which("java") or "java").resolve()
    home = directory / "jdk-shim"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    shim = home / "bin" / "java"
    shim.write_text("#!/usr/bin/env bash\nargs=()\nfor a in \"$@\"; do\n"
                    "  [[ \"$a\" == --sun-misc-unsafe-memory-access=* ]] || args+=(\"$a\")\ndone\n"
                    f'exec "{real}" "${{args[@]}}"\n')
    shim.chmod(0o755)
    return home


@dataclass
class Cluster:
    """A running standalone cluster."""

    master_url: str
    ui_port: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)

    def state(self) -> dict[str, object]:
        """The master's JSON status page (workers, applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def executors_of(self, worker: int) -> list[int]:
        """Pids of the executor JVMs worker number ``worker`` runs now (their working
        directory is an application directory under the worker's work directory)."""
        pids = []
        work = str(self.work_dirs[worker].resolve())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
                args = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cwd.startswith(work + os.sep) and b"CoarseGrainedExecutorBackend" in args:
                pids.append(int(entry.name))
        return pids

    def tasks_finished(self, worker: int) -> int:
        """Tasks the executors of worker ``worker`` finished (their logs say so)."""
        return sum(f.read_text(errors="replace").count("Finished task")
                   for f in self.work_dirs[worker].glob("app-*/*/stderr"))


@contextmanager
def standalone_cluster(directory: Path, workers: int = 2) -> Iterator[Cluster]:
    """A master and ``workers`` workers (1 core, 1 GiB each) on 127.0.0.1; stopped at exit."""
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=os.pathsep.join(sys.path),
               SPARK_LOG_DIR=str(directory / "logs"), SPARK_PID_DIR=str(directory))
    env.pop("SPARK_HOME", None)
    if java_major() < 23:
        env["JAVA_HOME"] = str(java_home_without_unsafe_flag(directory))
    port, ui = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    cluster = Cluster(f"spark://127.0.0.1:{port}", ui)
    logs: list[IO[bytes]] = []

    def log_file(name: str) -> IO[bytes]:
        logs.append(open(directory / name, "wb"))  # noqa: SIM115 - closed at exit
        return logs[-1]

    try:
        procs.append(subprocess.Popen(
            [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui)],
            env=env, stdout=subprocess.DEVNULL, stderr=log_file("master.log"),
            start_new_session=True))
        for n in range(workers):
            work = directory / f"worker{n}"
            work.mkdir()
            proc = subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", cluster.master_url,
                 "--host", "127.0.0.1", "--cores", "1", "--memory", "1g", "--work-dir", str(work),
                 "--webui-port", str(free_port())],
                env=env, stdout=subprocess.DEVNULL, stderr=log_file(f"worker{n}.log"),
                start_new_session=True)
            procs.append(proc)
            cluster.workers.append(proc)
            cluster.work_dirs.append(work)
        deadline = time.monotonic() + 90
        while True:
            try:
                alive = [w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]  # type: ignore[union-attr]
                if len(alive) == workers:
                    break
            except (OSError, ValueError):   # not listening yet, or a page not ready
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the Spark standalone cluster did not start (logs in {directory})")
            time.sleep(0.3)
        yield cluster
    finally:
        for proc in procs:   # each in its own session: its group holds its executors
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for f in logs:
            f.close()
