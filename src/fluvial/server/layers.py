"""The flows a server runs, and its speed layer: one stream runner thread per pipeline.

A *flow file* defines pipelines; each pipeline writes views.  A server runs
every pipeline of its flow files continuously on the local stream runner
(the speed layer) and, for ``lambda`` flows, on the batch runner on a
schedule.  After a Kappa reprocessing switches a pipeline to new code, the
new flow file is remembered in ``DATA_DIR/flows.json`` so that a restarted
server runs the code that wrote the current views.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluvial.engine.plan import compile_plan
from fluvial.errors import ConfigError, LeaseLost
from fluvial.flow.graph import Pipeline

__all__ = ["FLOWS_FILE", "RAN_FILE", "FlowSet", "Registered", "SpeedRunner", "failure_reason"]

FLOWS_FILE = "flows.json"
RAN_FILE = "flows-used.json"  # the flow files last used here: offline commands fall back on them
ARCHITECTURES = ("lambda", "kappa")
_logger = logging.getLogger("fluvial.server")


@dataclass
class Registered:
    """A pipeline the server runs: its code, the file it came from and its architecture."""

    pipeline: Pipeline
    file: Path
    architecture: str
    batch_every_s: float
    views: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.pipeline.name


def load_flow_file(file: Path) -> list[Pipeline]:
    from fluvial.flowfile import load_pipelines

    return load_pipelines(str(file))


@dataclass
class FlowSet:
    """Every pipeline of the server's flow files, by name, and which pipeline writes each view."""

    data_dir: Path
    pipelines: dict[str, Registered] = field(default_factory=dict)
    # the flow files as configured (before overrides), with the names of the pipelines each defines
    entries: list[tuple[Path, str, float, tuple[str, ...]]] = field(default_factory=list)

    @classmethod
    def load(cls, data_dir: Path, flows: list[tuple[Path, str, float]]) -> FlowSet:
        """``flows``: ``(file, architecture, batch_every_s)`` per flow file."""
        out = cls(data_dir)
        overrides = out._overrides()
        for file, architecture, every in flows:
            if architecture not in ARCHITECTURES:
                raise ConfigError(f"flow {file}: architecture must be 'lambda' or 'kappa', got {architecture!r}")
            names = []
            for loaded in load_flow_file(file):
                override = overrides.get(loaded.name)
                source, code = file, loaded
                if override is not None and Path(override["file"]) != file.resolve():
                    source = Path(override["file"])
                    code = out._pipeline_from(source, loaded.name)
                out.add(code, source, architecture, every)
                names.append(loaded.name)
            out.entries.append((Path(file).resolve(), architecture, every, tuple(names)))
        return out

    @staticmethod
    def remembered(data_dir: Path) -> list[tuple[Path, str, float]]:
        """The flow files last used on ``data_dir`` (by a server, a batch run or a reprocessing)."""
        return [(f, a, e) for f, a, e, _ in FlowSet._remembered(data_dir)]

    @staticmethod
    def _remembered(data_dir: Path) -> list[tuple[Path, str, float, tuple[str, ...]]]:
        try:
            data = json.loads((data_dir / RAN_FILE).read_text())
            return [(Path(e["file"]), str(e["architecture"]), float(e["batch_every_s"]), tuple(e["pipelines"]))
                    for e in data["flows"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {data_dir / RAN_FILE}: {exc}; give the flows with --flow FILE") from None

    def remember(self) -> None:
        """Note the flow files of this set as the ones that write the views of ``data_dir``.

        Offline commands (``fluvial rollback VIEW``, ``batch``, ``reprocess``) given no flows use them.
        Files remembered before stay, unless they are among these or define one of their pipelines.
        """
        if not self.entries or not self.data_dir.is_dir():
            return
        mine = {f for f, *_ in self.entries}
        names = {n for *_, pipelines in self.entries for n in pipelines}
        try:
            kept = [e for e in self._remembered(self.data_dir) if e[0] not in mine and not names & set(e[3])]
        except ConfigError:
            kept = []   # an unreadable file is replaced
        entries = [{"file": str(f), "architecture": a, "batch_every_s": e, "pipelines": list(p)}
                   for f, a, e, p in kept + self.entries]
        path = self.data_dir / RAN_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"flows": entries}, indent=2))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only data directory: commands then need --flow
            _logger.warning("cannot remember the flow files in %s: %s", path, exc)

    def add(self, pipeline: Pipeline, file: Path, architecture: str, every: float) -> Registered:
        if pipeline.name in self.pipelines and self.pipelines[pipeline.name].file != file:
            raise ConfigError(f"two flow files define pipeline {pipeline.name!r}: "
                              f"{self.pipelines[pipeline.name].file} and {file}; pipeline names must be unique")
        views = tuple(compile_plan(pipeline).views)
        for name in views:
            other = self.pipeline_of(name, missing_ok=True)
            if other is not None and other.name != pipeline.name:
                raise ConfigError(f"view {name!r} is written by two pipelines, {other.name!r} and "
                                  f"{pipeline.name!r}: a view has one writer")
        reg = Registered(pipeline, file.resolve(), architecture, every, views)
        self.pipelines[pipeline.name] = reg
        return reg

    def pipeline_of(self, view: str, *, missing_ok: bool = False) -> Registered | None:
        """The registered pipeline that writes ``view``."""
        for reg in self.pipelines.values():
            if view in reg.views:
                return reg
        if missing_ok:
            return None
        known = sorted(v for reg in self.pipelines.values() for v in reg.views)
        raise ConfigError(f"no flow of this server writes view {view!r}; its views: {known or 'none'} "
                          "(add the flow file with --flow FILE or in fluvial.toml)")

    def replace(self, name: str, pipeline: Pipeline, file: Path) -> Registered:
        """Switch pipeline ``name`` to new code (after a reprocessing) and remember it."""
        old = self.pipelines[name]
        reg = Registered(pipeline, file.resolve(), old.architecture, old.batch_every_s,
                         tuple(compile_plan(pipeline).views))
        self.pipelines[name] = reg
        overrides = self._overrides()
        overrides[name] = {"file": str(reg.file), "previous": str(old.file)}
        self._save_overrides(overrides)
        return reg

    def previous_file(self, name: str) -> Path | None:
        entry = self._overrides().get(name)
        return Path(entry["previous"]) if entry and entry.get("previous") else None

    def _pipeline_from(self, file: Path, name: str) -> Pipeline:
        for pipeline in load_flow_file(file):
            if pipeline.name == name:
                return pipeline
        raise ConfigError(f"{self.data_dir / FLOWS_FILE} says pipeline {name!r} runs the code of {file}, "
                          "which no longer defines it; fix or delete that entry")

    def _overrides(self) -> dict[str, dict[str, str]]:
        path = self.data_dir / FLOWS_FILE
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}; delete it to run the configured flow files") from exc
        return data if isinstance(data, dict) else {}

    def _save_overrides(self, overrides: dict[str, dict[str, str]]) -> None:
        path = self.data_dir / FLOWS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(overrides, indent=2, sort_keys=True))
        os.replace(tmp, path)


class SpeedRunner:
    """One pipeline on the local stream runner, in a thread, until stopped.

    The thread opens its own store connection and a read-only view of the log.
    If a micro-batch fails, the error is kept (``last_error``) and the runner
    restarts from its checkpoint after ``retry_s``: committed work is never
    redone twice, uncommitted work is redone. A full disk (the view store
    cannot commit) is such a failure: the runner retries until space returns.

    Attributes:
        last_error: Why it last failed (the root cause, with what to do about a full disk).
        errors: How many times it failed.
        failing: It failed and has not committed a micro-batch since.
        last_error_at: When it last failed, while :attr:`failing` (else 0.0): ``/healthz``
            says the speed layer is degraded until it commits again.
    """

    def __init__(self, reg: Registered, workspace: Callable[[], Any], config: Any, *,
                 retry_s: float = 1.0) -> None:
        self.reg = reg
        self._workspace = workspace   # opens the server's data directory (its log and store URLs)
        self.config = config          # a StreamConfig: micro-batching and the lease
        self.retry_s = retry_s
        self.runner: Any = None
        self.last_error: str | None = None
        self.errors = 0
        self._error_at = 0.0
        self._failed: Any = None  # the runner that failed last (None: no failure yet)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fluvial-speed-{reg.name}", daemon=True)

    def start(self) -> SpeedRunner:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.runner.progress) if self.runner is not None else {}

    @property
    def failing(self) -> bool:
        """It failed, and no micro-batch has committed since (a new runner replaces a failed one)."""
        runner = self.runner
        if self._failed is None:
            return False
        return runner is self._failed or runner is None or not runner.progress.get("micro_batches")

    @property
    def last_error_at(self) -> float:
        return self._error_at if self.failing else 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            ws = self._workspace()
            try:
                # A standby while another process runs the pipeline (a `fluvial run`, another server):
                # the claim waits until it stops or goes silent, then goes on from its checkpoint.
                self.runner = ws.stream_runner(self.config, out=_NullOut(), wait_s=math.inf)
                self.runner.run(self.reg.pipeline, stop=self._stop)
            except LeaseLost as exc:   # another process took the pipeline over: wait for it again
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("speed layer of %s: %s", self.reg.name, exc)
            except Exception as exc:
                self.errors += 1
                self.last_error = failure_reason(exc, self.retry_s)
                self._error_at = time.time()
                self._failed = self.runner
                _logger.error("speed layer of %s failed, restarting from its checkpoint: %s\n%s",
                              self.reg.name, self.last_error, traceback.format_exc())
                self._stop.wait(self.retry_s)
            finally:
                ws.close()


def failure_reason(exc: BaseException, retry_s: float) -> str:
    """``Type: message`` of what made a micro-batch fail, from the root cause.

    A failed commit can surface as a later error raised while undoing it (SQLite
    rolls a transaction back by itself on a full disk, so the ROLLBACK after the
    failed COMMIT says "cannot rollback - no transaction is active"): the error
    it was handling is the cause. A full disk says what to do.
    """
    cause = exc
    while isinstance(cause, sqlite3.OperationalError) and "no transaction is active" in str(cause) \
            and cause.__context__ is not None:
        cause = cause.__context__
    full = next((e for e in _chain(cause) if _disk_full(e)), None)
    if full is None:
        return f"{type(cause).__name__}: {cause}"
    # the error of the disk itself, not the store's wrapping of it (which names the file)
    return (f"{type(full).__name__}: {full} (the disk of the data directory is full: free space; the speed "
            f"layer retries by itself every {retry_s:g} s)")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class _NullOut:
    """``print()`` sinks of served flows: the server has no terminal to print to."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
