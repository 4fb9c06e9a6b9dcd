"""A real ``fluvial serve`` process on loopback, for end-to-end tests.

    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"]) as srv:
        status, body = srv.post_events(events)
        rows = srv.get("/v1/views/device_stats")["rows"]

``kill()`` sends SIGKILL (no clean shutdown); ``start()`` again restarts it on
the same data directory and port.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``fluvial --data-dir DIR serve --port P --flow F... [extra args]`` in a child process."""

    def __init__(self, tmp_path: Path, *, flows: list[Path] = (), kappa: list[Path] = (),  # type: ignore[assignment]
                 batch_every: float = 0, batch_interval_ms: int = 100, config: str | None = None,
                 extra: list[str] = (), env: dict[str, str] | None = None) -> None:  # type: ignore[assignment]
        self.data_dir = tmp_path / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = tmp_path / f"server-{self.port}.log"
        args = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(self.data_dir), "serve",
                "--port", str(self.port), "--batch-every", str(batch_every),
                "--batch-interval-ms", str(batch_interval_ms)]
        for f in flows:
            args += ["--flow", str(f)]
        for f in kappa:
            args += ["--kappa", str(f)]
        if config is not None:
            cfg = tmp_path / "fluvial.toml"
            cfg.write_text(config)
            args += ["--config", str(cfg)]
        self.args = args + list(extra)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> ServerProcess:
        with warnings.catch_warnings():
            # a restart replaces the Popen of a killed process: its handles go to the garbage
            # collector, which warns about them (and warnings are errors in this suite)
            warnings.simplefilter("ignore", ResourceWarning)
            return self._start(timeout)

    def _start(self, timeout: float) -> ServerProcess:
        with open(self.log_file, "ab") as out:  # the child has its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=1)
                if status in (200, 503):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.output()}")

    def children(self) -> list[int]:
        """The pids of this server's child processes (its batch runs)."""
        assert self.proc is not None
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError):   # a thread that ended meanwhile
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait: the clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> ServerProcess:  # noqa: PYI034 (start() returns self)
        if self.proc is not None and self.proc.poll() is None:
            return self   # started already (``with srv.start():``): one server, stopped at the end
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, path: str, token: str | None = None) -> Any:
        status, body = self.request("GET", path, headers=_auth(token))
        assert status == 200, (status, body[:500])
        return json.loads(body)

    def post_events(self, events: list[Any], *, fmt: str = "json", gzip: bool = False,
                    token: str | None = None) -> tuple[int, Any]:
        """POST events (dicts or Events); returns (status, decoded JSON body)."""
        if fmt == "json":
            body, ctype = msgspec.json.encode(events), "application/json"
        elif fmt == "ndjson":
            body, ctype = b"".join(msgspec.json.encode(e) + b"\n" for e in events), "application/x-ndjson"
        else:
            body, ctype = msgspec.msgpack.encode(events), "application/msgpack"
        headers = {"Content-Type": ctype, **_auth(token)}
        if gzip:
            body = gzip_module.compress(body)
            headers["Content-Encoding"] = "gzip"
        status, raw = self.request("POST", "/v1/events", body, headers)
        return status, json.loads(raw)

    def admin(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        status, raw = self.request(method, path, data, {"Content-Type": "application/json", **_auth(token)})
        return status, json.loads(raw)

    def wait_job(self, job_id: str, timeout: float = 120, token: str | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}", token)
            if job["status"] != "running":
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still running after {timeout} s")

    def wait_caught_up(self, timeout: float = 30, token: str | None = None) -> None:
        """Until every speed-layer runner has processed the whole log."""
        time.sleep(0.25)  # the lag monitor (every 100 ms) has measured since the caller's last post
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runners = self.get("/v1/metrics", token)["speed_layer"]
            if runners and all(r["lag_events"] == 0 for r in runners.values()):
                time.sleep(0.15)   # the lag monitor runs every 100 ms: confirm with a fresh reading
                runners = self.get("/v1/metrics", token)["speed_layer"]
                if all(r["lag_events"] == 0 for r in runners.values()):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"speed layer not caught up after {timeout} s: {self.get('/v1/metrics', token)}")


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
