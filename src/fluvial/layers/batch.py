"""The batch layer of a server: scheduled and requested runs, each in a child process.

A run is ``fluvial batch`` for one pipeline, in a process of its own: it uses
the other cores, and a crash there cannot take the server down.  It opens the
server's log and store by their URLs, takes its cut-off and publishes its
versions in the store (:mod:`fluvial.layers.handover`), so the server only
starts it and reads its result.  One run per pipeline at a time: asking for a
run while one is under way returns that one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError
from fluvial.layers.jobs import Job
from fluvial.layers.pipelines import FlowSet

__all__ = ["BatchLayer"]

_logger = logging.getLogger("fluvial.server")


class BatchLayer:
    """The batch-layer runs of a server's ``lambda`` pipelines.

    Args:
        flows: The pipelines the server runs.
        settings: The server's :class:`fluvial.settings.Settings` (``[batch]``: engine,
            workers, Spark master and configuration; the config file the child reads).
        log_url, store_url: What the child opens (the server's own log and store).
        new_job: Makes (and registers) a job: ``new_job(kind, view, pipeline)``.
        spawn: Runs a coroutine in the server's event loop, in the background.

    Attributes:
        running: Per pipeline, the run under way.
        stats: Per pipeline: runs, failures, and the last run's duration, status and end.
    """

    def __init__(self, flows: FlowSet, settings: Any, *, log_url: str, store_url: str,
                 new_job: Callable[[str, str, str], Job],
                 spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.flows = flows
        self.settings = settings
        self.log_url, self.store_url = log_url, store_url
        self._new_job = new_job
        self._spawn = spawn
        self.running: dict[str, Job] = {}
        self.stats: dict[str, dict[str, Any]] = {}

    def schedule_all(self) -> None:
        """Start the schedule of every ``lambda`` pipeline with an interval (in the event loop)."""
        for reg in self.flows.pipelines.values():
            if reg.architecture == "lambda" and reg.batch_every_s > 0:
                self._spawn(self._schedule(reg.name))

    async def _schedule(self, name: str) -> None:
        while True:
            reg = self.flows.pipelines.get(name)
            if reg is None:
                return
            await asyncio.sleep(reg.batch_every_s)
            if name not in self.running:
                await self.run(name)

    def start(self, view: str) -> Job:
        """Start a run of the pipeline writing ``view`` (or return the one under way)."""
        reg = self.flows.pipeline_of(view)
        assert reg is not None
        if reg.architecture == "kappa":
            raise ConfigError(f"view {view!r} belongs to a kappa flow ({reg.name!r}): it has no batch layer; "
                              "recompute it with reprocess")
        running = self.running.get(reg.name)
        if running is not None:
            return running
        job = self._new_job("batch", view, reg.name)
        self.running[reg.name] = job
        self._spawn(self.run(reg.name, job))
        return job

    def command(self, name: str) -> list[str]:
        """The child process that runs the batch layer of pipeline ``name`` once."""
        reg = self.flows.pipelines[name]
        settings, batch = self.settings, self.settings.batch
        cmd = [sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(Path(settings.data_dir)),
               "--log", self.log_url, "--store", self.store_url, "batch",
               "--flow", str(reg.file), "--pipeline", name, "--format", "json",
               "--engine", batch.engine, "--workers", str(batch.workers)]
        if settings.source is not None:   # the child opens the log as the server does ([log] partitions...)
            cmd += ["--config", str(settings.source)]
        if batch.engine == "spark":
            cmd += ["--spark-master", batch.spark_master]
            for k, v in batch.spark_conf.items():
                cmd += ["--spark-conf", f"{k}={v}"]
        return cmd

    async def run(self, name: str, job: Job | None = None) -> Job:
        """Run the batch layer of pipeline ``name`` once, in a child process; the job says how it went."""
        reg = self.flows.pipelines[name]
        if job is None:
            job = self._new_job("batch", reg.views[0] if reg.views else name, name)
            self.running[name] = job
        started = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(*self.command(name), stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            job.progress["_proc"] = proc
            out, err = await proc.communicate()
            if proc.returncode != 0:
                lines = err.decode(errors="replace").strip().splitlines()
                raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")
            job.result = json.loads(out.decode().strip().splitlines()[-1])
            job.status = "done"
        except Exception as exc:
            job.status, job.error = "failed", str(exc)
            _logger.error("batch layer run of %s failed: %s", name, exc)
        finally:
            job.progress.pop("_proc", None)
            job.finished_ms = time.time_ns() // 1_000_000
            self.running.pop(name, None)
            stats = self.stats.setdefault(name, {"runs": 0, "failures": 0})
            stats["runs"] += 1
            stats["failures"] += job.status == "failed"
            stats["last_duration_s"] = round(time.perf_counter() - started, 3)
            stats["last_status"] = job.status
            stats["last_finished_ms"] = job.finished_ms
        return job

    def terminate(self) -> None:
        """Stop the runs under way (the server stops): a run that dies before its publish changes nothing."""
        for job in list(self.running.values()):
            proc = job.progress.get("_proc")
            if proc is not None and proc.returncode is None:
                proc.terminate()
