"""Run a pipeline over a list of events on a real runner, in a throw-away workspace."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fluvial.config import LogConfig, StreamConfig
from fluvial.engine.batch import RunStats
from fluvial.engine.plan import compile_plan
from fluvial.errors import ConfigError
from fluvial.events.envelope import Event
from fluvial.flow.graph import Pipeline
from fluvial.serving.base import Row
from fluvial.workspace import Workspace

__all__ = ["RunResult", "read_results", "run_batch", "run_on", "run_stream"]


@dataclass
class RunResult:
    """What a run left in its store.

    Attributes:
        views: ``store.query(name)`` rows of every view the pipeline writes.
        late: Per view, the events the stream runner counted late (0 in batch runs).
        tables: Rows of every ``save_to`` table of the workspace store, sorted.
        stats: One :class:`RunStats` per runner call.
        printed: What ``print()`` sinks wrote.
    """

    views: dict[str, list[Row]]
    late: dict[str, int]
    tables: dict[str, list[dict[str, Any]]]
    stats: list[RunStats] = field(default_factory=list)
    printed: str = ""

    def __getitem__(self, view: str) -> list[Row]:
        return self.views[view]


def read_results(pipeline: Pipeline, store: Any) -> RunResult:
    """The views (rows and late counts) and ``save_to`` tables ``pipeline`` writes in ``store``."""
    plan = compile_plan(pipeline)
    views = {name: store.query(name) for name in plan.views}
    late = {name: store.view(name).late_events for name in plan.views}
    tables = {}
    existing = set(store.tables())  # a stream run that saved nothing has not created its tables
    for sink in plan.sinks:
        if sink.op == "save" and sink.params["store"] is None:
            table = sink.params["table"]
            found = store.table_rows(table) if table in existing else []
            tables[table] = sorted(found, key=lambda r: msgspec.json.encode(list(r.values())))
    return RunResult(views, late, tables)


def _workspace(directory: str | os.PathLike[str], prefix: str, partitions: int, store: str | None,
               log: str | None = None) -> Workspace:
    path = tempfile.mkdtemp(prefix=prefix, dir=directory)
    return Workspace(path, writer=True, log_config=LogConfig(partitions=partitions, fsync="never"),
                     store_url=store, log_url=log)


def _chunks(events: Sequence[Event], appends: int) -> Iterable[Sequence[Event]]:
    if appends < 1:
        raise ConfigError(f"appends must be >= 1, got {appends}")
    size = -(-len(events) // appends) or 1
    for i in range(0, max(len(events), 1), size):
        yield events[i:i + size]


def run_on(start: Callable[[Workspace, io.StringIO], RunStats], pipeline: Pipeline,
           events: Sequence[Event], tmp_path: str | os.PathLike[str], *, appends: int = 1,
           partitions: int = 4, keep: bool = False, store: str | None = None,
           log: str | None = None) -> RunResult:
    """The harness every runner shares: a new workspace under ``tmp_path``; ``events``
    appended in ``appends`` slices, ``start(ws, out)`` (one run of a runner) after each;
    then the views, tables, late counts and printed output read back.  ``store``: the
    URL of an empty view store to use (default: a SQLite file in the workspace); ``log``: the URL
    of a new, empty log elsewhere (e.g. ``nats://127.0.0.1:4222/NAME``), else one in the workspace.

    Example:
        >>> import tempfile
        >>> from fluvial import Pipeline
        >>> p = Pipeline("n")
        >>> p.from_log("k").map(lambda e: (e.device, 1)).reduce_by_key(lambda a, b: a + b).to_view("n")
        >>> evs = [Event(device="d1", kind="k", ts=t, seq=t, payload={}) for t in (5, 9)]
        >>> run_on(lambda ws, out: ws.batch_runner(out=out).run(p), p, evs, tempfile.mkdtemp())["n"]
        [Row(key='d1', window=None, value=2)]
    """
    ws = _workspace(tmp_path, "run-", partitions, store, log)
    out = io.StringIO()
    try:
        stats = []
        for chunk in _chunks(events, appends):
            if chunk:
                ws.log.append(list(chunk))
            stats.append(start(ws, out))
        result = read_results(pipeline, ws.store)
        result.stats = stats
        result.printed = out.getvalue()
        return result
    finally:
        ws.close()
        if not keep:
            shutil.rmtree(ws.path, ignore_errors=True)


def run_batch(pipeline: Pipeline, events: Sequence[Event], tmp_path: str | os.PathLike[str], *,
              partitions: int = 4, workers: int = 1, slice_records: int = 100_000,
              keep: bool = False, store: str | None = None, log: str | None = None) -> RunResult:
    """Append ``events`` to a new log under ``tmp_path``, run ``pipeline`` on the batch runner.

    Args:
        pipeline: The pipeline; its views and ``save_to`` tables are read back.
        events: Appended in order, in one call (the log drops retries).
        tmp_path: A directory; the workspace is a new sub-directory of it.
        partitions: Partitions of the new log.
        workers, slice_records: Passed to the :class:`BatchRunner`.
        keep: Keep the workspace directory (default: deleted after reading the results).
        store: The URL of an empty view store (default: a SQLite file in the workspace).
        log: The URL of a new, empty log to use instead of one in the workspace.

    Example:
        >>> import operator, tempfile, fluvial as fl
        >>> from fluvial.testing import events_table
        >>> p = fl.Pipeline("n")
        >>> p.from_log("reading").map(lambda e: (e.device, 1)).reduce_by_key(operator.add).to_view("n")
        >>> evs = events_table('''
        ... | device | ts | value |
        ... | d1     | 1  | 1     |
        ... | d1     | 2  | 1     |''')
        >>> run_batch(p, evs, tempfile.mkdtemp())["n"]
        [Row(key='d1', window=None, value=2)]
    """
    return run_on(lambda ws, out: ws.batch_runner(workers=workers, slice_records=slice_records,
                                                  progress=False, out=out).run(pipeline),
                  pipeline, events, tmp_path, partitions=partitions, keep=keep, store=store, log=log)


def run_stream(pipeline: Pipeline, events: Sequence[Event], tmp_path: str | os.PathLike[str], *,
               max_batch_records: int = 100_000, appends: int = 1, partitions: int = 4,
               keep: bool = False, store: str | None = None, log: str | None = None) -> RunResult:
    """Append ``events`` to a new log under ``tmp_path`` and run ``pipeline`` on the
    stream runner until it has caught up with the log.

    Args:
        pipeline: The pipeline; its views and ``save_to`` tables are read back.
        events: The events, appended in order in ``appends`` slices; after each
            slice the runner runs until caught up (so micro-batches also end
            where appends end, and runs restart from the checkpoint).
        tmp_path: A directory; the workspace is a new sub-directory of it.
        max_batch_records: At most this many log records per micro-batch
            (small values give many micro-batches).
        partitions: Partitions of the new log.
        keep: Keep the workspace directory (default: deleted after reading the results).
        store: The URL of an empty view store (default: a SQLite file in the workspace).
        log: The URL of a new, empty log to use instead of one in the workspace.
    """
    config = StreamConfig(batch_interval_ms=0, max_batch_records=max_batch_records)
    return run_on(lambda ws, out: ws.stream_runner(config, out=out).run(pipeline, until_caught_up=True),
                  pipeline, events, tmp_path, appends=appends, partitions=partitions, keep=keep, store=store,
                  log=log)

