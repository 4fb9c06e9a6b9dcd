"""The server: one process hosting ingest, the speed layer, the batch layer and queries.

Threads and processes:

* the asyncio event loop (HTTP) decodes and validates request bodies;
* one log-writer thread appends them with group commit (:mod:`.writer`);
* one thread per pipeline runs its stream runner (the speed layer);
* batch-layer runs are child processes (``fluvial batch``): they use the
  other cores, and a crash there cannot take the server down;
* queries run on a small thread pool, each thread with its own store connection;
* reprocessing runs in a thread of its own;
* one thread keeps the device table up to date (:mod:`fluvial.layers.devices`).

The store (SQLite in WAL mode) is what they share: a query reads one snapshot,
so it sees a whole version switch or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, LogError
from fluvial.layers.batch import BatchLayer
from fluvial.layers.devices import DeviceFollower
from fluvial.layers.jobs import Job, new_job_id
from fluvial.layers.pipelines import FlowSet, Registered
from fluvial.layers.speed import SpeedRunner
from fluvial.server.limits import Limits
from fluvial.server.loghealth import LogHealth, open_logs
from fluvial.server.writer import LogWriter

if TYPE_CHECKING:
    from fluvial.serving.base import ViewStore
    from fluvial.workspace import Workspace

__all__ = ["SERVER_FILE", "Metrics", "Server"]

SERVER_FILE = "server.json"
"""Written in the data directory while a server runs: its URL and pid (for the CLI)."""
_logger = logging.getLogger("fluvial.server")


class Metrics:
    """Counters of the ingest edge and a 10 s window for the event rate."""

    WINDOW_S = 10.0

    def __init__(self) -> None:
        self.started = time.time()
        self.events_accepted = 0
        self.events_duplicate = 0
        self.events_rejected = 0
        self.dead_letters = 0
        self.bytes_in = 0
        self.requests: dict[int, int] = {}
        self.throttled = 0
        self._recent: deque[tuple[float, int]] = deque()

    def request(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def accepted(self, n: int) -> None:
        self.events_accepted += n
        now = time.monotonic()
        self._recent.append((now, n))
        self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        self._trim(now)
        if not self._recent:
            return 0.0
        span = max(1.0, min(self.WINDOW_S, now - self._recent[0][0]))
        return sum(n for _, n in self._recent) / span

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > self.WINDOW_S:
            self._recent.popleft()


class Server:
    """Everything ``fluvial serve`` runs, minus HTTP (see :mod:`fluvial.api.app`).

    Args:
        settings: A :class:`fluvial.settings.Settings`.
        flows: The pipelines to run (default: loaded from ``settings.flows``).
        speed_layer: ``"local"``: a stream runner per pipeline in this process; ``"workers"``:
            none (ingest and queries only): ``fluvial worker`` processes run the speed layer
            and write the views to the shared store, which this server serves.
    """

    def __init__(self, settings: Any, flows: FlowSet | None = None, *, speed_layer: str = "local") -> None:
        if speed_layer not in ("local", "workers"):
            raise ConfigError(f"speed_layer must be 'local' or 'workers', got {speed_layer!r}")
        self.speed_layer = speed_layer
        from fluvial.server.auth import TOKENS_FILE, TokenStore

        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.ws = self.workspace(writer=True)
        self.log, self.dead_letters = open_logs(self.ws)  # damaged: names `fluvial log verify`/`salvage`
        self.schemas = self.ws.schemas
        self.flows = flows if flows is not None else FlowSet.load(
            self.data_dir, [(f.file, f.architecture,
                             f.batch_every_s if f.batch_every_s is not None else settings.batch.every_s)
                            for f in settings.flows])
        self.flows.remember()
        self.tokens = TokenStore(self.data_dir / TOKENS_FILE)
        self.auth = settings.server.auth_enabled
        self.metrics = Metrics()
        self.writer = LogWriter(self.log, self.dead_letters)
        self.limits = Limits(settings, self.writer)  # ingest's budget, load shedding, quotas, connections
        self.log_health = LogHealth(self)  # checksums of sealed segments, in the background (/healthz)
        self.speed: dict[str, SpeedRunner] = {}
        self.jobs: dict[str, Job] = {}
        self.batch = BatchLayer(self.flows, settings, log_url=self.ws.log_url, store_url=self.ws.store_url,
                                new_job=self._job, spawn=self._spawn)
        self.lag: dict[str, int] = {}
        self.url: str | None = None
        self.mqtt: Any = None
        self.devices = DeviceFollower(self.workspace)   # the device table (fluvial devices, /v1/devices)
        self._local = threading.local()
        self._queries = ThreadPoolExecutor(2, thread_name_prefix="fluvial-query")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[threading.Timer] = []
        self._stopping = False
        self._switch_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the speed layer and the MQTT bridge (call before serving requests)."""
        self.log_health.start()
        self.devices.start()
        if self.settings.server.mqtt:
            from fluvial.server.mqtt import MqttBridge

            self.mqtt = MqttBridge(self, self.settings.server.mqtt, topic=self.settings.server.mqtt_topic).start()
        if self.speed_layer == "workers":   # `fluvial worker` processes run it: only define the views
            self._define_views()
            return
        for reg in self.flows.pipelines.values():
            self._start_speed(reg)

    async def start_background(self) -> None:
        """Start the lag monitor and the batch schedules (inside the event loop)."""
        self._spawn(self._monitor())
        self.batch.schedule_all()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)  # finished batch runs do not pile up

    def announce(self, url: str) -> None:
        self.url = url
        (self.data_dir / SERVER_FILE).write_text(json.dumps({"url": url, "pid": os.getpid()}))

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        self.batch.terminate()
        self.close()

    def close(self) -> None:
        self.log_health.stop()
        self.devices.stop()
        if self.mqtt is not None:
            self.mqtt.stop()   # what it has not acknowledged yet, the broker delivers again
        for timer in self._timers:
            timer.cancel()
        for runner in self.speed.values():
            runner.stop()
        self.writer.close()
        self._queries.shutdown(wait=True)
        with contextlib.suppress(FileNotFoundError):
            info = json.loads((self.data_dir / SERVER_FILE).read_text())
            if info.get("pid") == os.getpid():
                (self.data_dir / SERVER_FILE).unlink()
        self.tokens.close()
        self.ws.close()

    # -- speed layer ----------------------------------------------------------------------
    def _define_views(self) -> None:
        """Define the views of every pipeline (the workers may not have started yet)."""
        from fluvial.engine.plan import compile_plan

        for reg in self.flows.pipelines.values():
            for name, spec in compile_plan(reg.pipeline).views.items():
                self.ws.store.define_view(name, aggregator=spec.aggregator, window=spec.window)

    def _start_speed(self, reg: Registered) -> None:
        if self.speed_layer == "workers":
            return
        self.speed[reg.name] = SpeedRunner(reg, self.workspace, self.settings.stream).start()

    def _stop_speed(self, name: str) -> None:
        runner = self.speed.pop(name, None)
        if runner is not None:
            runner.stop()

    def runner_lag(self, name: str, ends: list[int] | None = None) -> int | None:
        runner = self.speed.get(name)
        offsets = runner.progress.get("offsets") if runner is not None else None
        if offsets is None:
            return None
        ends = ends if ends is not None else self.log.end_offsets()
        return sum(max(0, e - o) for e, o in zip(ends, offsets))

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Off the event loop: the log's lock is held by the writer thread during an fsync.
            try:
                ends = await loop.run_in_executor(None, self.log.end_offsets)
            except LogError as exc:   # a replicated log electing a leader: the lag is unknown meanwhile
                _logger.warning("cannot read the log's end offsets: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self.lag = {name: lag for name in list(self.speed)
                        if (lag := self.runner_lag(name, ends)) is not None}
            await asyncio.sleep(0.1)

    def overloaded(self) -> str | None:
        """Why ingest should push back now (``None``: it should not)."""
        limit = self.settings.max_lag_records
        for name, lag in self.lag.items():
            if lag > limit:
                return f"the speed layer of {name!r} is {lag} events behind the log (limit {limit})"
        return None

    def workspace(self, *, writer: bool = False) -> Workspace:
        """The data directory with the log and the store the server uses (its settings' URLs)."""
        from fluvial.workspace import Workspace

        return Workspace(self.data_dir, writer=writer, log_config=self.settings.log,
                         log_url=self.settings.log_url, store_url=self.settings.store_url)

    # -- queries --------------------------------------------------------------------------
    def store(self) -> ViewStore:
        """This thread's store connection."""
        store = getattr(self._local, "store", None)
        if store is None:
            from fluvial.backends import open_store

            store = self._local.store = open_store(self.ws.store_url)
        return store

    async def in_query_pool(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._queries, lambda: fn(*args, **kwargs))

    def view_infos(self) -> list[dict[str, Any]]:
        out = []
        for info in self.store().views():
            reg = self.flows.pipeline_of(info.name, missing_ok=True)
            lag = self.lag.get(reg.name) if reg is not None else None
            runner = self.speed.get(reg.name) if reg is not None else None
            out.append({
                "name": info.name, "version": info.alias_version, "versions": info.versions,
                "previous_version": info.previous_version,
                "batch_cutoff": ({str(p): o for p, o in info.cutoff.items()} if info.cutoff else None),
                "realtime_lag_events": lag, "late_events": info.late_events,
                "pipeline": reg.name if reg is not None else None,
                "architecture": reg.architecture if reg is not None else None,
                "window": info.window, "aggregator": info.aggregator, "updated_ms": info.updated_ms,
                "speed_layer": None if runner is None else {
                    "micro_batches": runner.progress.get("micro_batches", 0),
                    "last_batch_ms": round(runner.progress.get("last_batch_ms", 0.0), 2),
                    "errors": runner.errors, "last_error": runner.last_error},
            })
        return out

    # -- batch layer ----------------------------------------------------------------------
    def start_batch(self, view: str) -> Job:
        """Start a batch-layer run of the pipeline writing ``view`` (or return the running one)."""
        return self.batch.start(view)

    # -- reprocessing and rollback ----------------------------------------------------------
    def start_reprocess(self, view: str, *, start: str, flow_file: str | None, dry_run: bool,
                        keep_old: bool | None, grace_s: float | None) -> Job:
        from fluvial.layers.pipelines import load_flow_file

        reg = self.flows.pipeline_of(view)
        assert reg is not None
        pipeline = None
        file = None
        if flow_file:
            file = Path(flow_file).resolve()
            pipeline = next((p for p in load_flow_file(file) if p.name == reg.name), None)
            if pipeline is None:
                raise ConfigError(f"{flow_file} defines no pipeline named {reg.name!r} (the writer of {view!r})")
        keep = self.settings.reprocess.keep_old if keep_old is None else keep_old
        grace = self.settings.reprocess.grace_s if grace_s is None else grace_s
        job = self._job("reprocess", view, reg.name)
        threading.Thread(target=self._reprocess, name=f"fluvial-reprocess-{reg.name}", daemon=True,
                         args=(job, view, start, pipeline, file, dry_run, keep, grace)).start()
        return job

    def _reprocess(self, job: Job, view: str, start: str, pipeline: Any, file: Path | None, dry_run: bool,
                   keep_old: bool, grace_s: float) -> None:
        from fluvial.layers.kappa import reprocess

        ws = self.workspace()
        try:
            with self._switch_lock:
                result = reprocess(ws, self.flows, view, start=start, pipeline=pipeline, flow_file=file,
                                   dry_run=dry_run, max_batch_records=self.settings.stream.max_batch_records,
                                   stop_live=self._stop_speed, start_live=self._start_speed,
                                   progress=job.progress.update)
            job.result = result.to_dict()
            job.status = "done"
            if result.switched and not keep_old:
                timer = threading.Timer(grace_s, self._drop_old, args=(job, result))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
        except Exception as exc:
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            _logger.error("reprocessing of %s failed: %s", view, exc)
        finally:
            job.finished_ms = time.time_ns() // 1_000_000
            ws.close()

    def _drop_old(self, job: Job, result: Any) -> None:
        from fluvial.layers.kappa import drop_old

        ws = self.workspace()
        try:
            with self._switch_lock:
                drop_old(ws, result)
            if job.result is not None:
                job.result["dropped_old"] = result.dropped_old
        except Exception as exc:
            _logger.error("dropping the old versions of %s failed: %s", result.view, exc)
        finally:
            ws.close()

    def rollback(self, view: str) -> dict[str, int]:
        from fluvial.layers.kappa import rollback

        ws = self.workspace()
        try:
            with self._switch_lock:
                return rollback(ws, self.flows, view, stop_live=self._stop_speed, start_live=self._start_speed)
        finally:
            ws.close()

    def _job(self, kind: str, view: str, pipeline: str) -> Job:
        job = Job(new_job_id(), kind, view, pipeline)
        self.jobs[job.id] = job
        if len(self.jobs) > 200:  # keep the latest
            for old in list(self.jobs)[:-200]:
                if self.jobs[old].status != "running":
                    del self.jobs[old]
        return job
