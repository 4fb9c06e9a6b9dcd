"""A data directory: the log, the dead-letter log, the schemas and the serving store.

Layout of ``DATA_DIR`` (default ``./.fluvial``)::

    log/             the immutable event log (partitioned segment files)
    dead-letters/    events refused by validation, with the reason
    schemas.json     the schema registry (kinds and versions)
    views.db         the serving store: views, save_to tables, stream checkpoints
    cache/           flows persisted at a DISK level (persist(StorageLevel.DISK)), per pipeline

The log and the store may live elsewhere, on any backend: ``log_url`` and
``store_url`` (see :mod:`fluvial.backends`).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

from fluvial.backends import (
    LogSpec,
    check_log_url,
    check_store_url,
    default_log_url,
    default_store_url,
    in_data_dir,
    log_path,
    open_log,
    open_store,
)
from fluvial.config import DEFAULT_LOG, DEFAULT_STREAM, LogConfig, StreamConfig

if TYPE_CHECKING:
    from fluvial.engine.batch import BatchRunner
    from fluvial.engine.stream import StreamRunner
    from fluvial.events import SchemaRegistry
    from fluvial.log import DeadLetterLog
    from fluvial.log.base import Log, LogReader
    from fluvial.serving.base import ViewStore


class Workspace:
    """Opens the parts of a data directory lazily.

    Args:
        path: The data directory (created if missing).
        writer: Open the log for appending (one writer at a time); readers see
            what writers append.
        log_config: Settings of the embedded log.
        log_url: Where the log is (default ``file://PATH/log``; see :mod:`fluvial.backends`);
            ``{data_dir}`` in it stands for ``path``.
        store_url: Where the view store is (default ``sqlite://PATH/views.db``; ``{data_dir}`` too).

    Example:
        >>> import tempfile, fluvial
        >>> with fluvial.open(tempfile.mkdtemp(), writer=True) as ws:
        ...     ws.log.partitions
        4
    """

    def __init__(self, path: str | os.PathLike[str], *, writer: bool = False,
                 log_config: LogConfig = DEFAULT_LOG, log_url: str | None = None,
                 store_url: str | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.log_config = log_config
        self.log_url = in_data_dir(log_url, self.path) if log_url else default_log_url(self.path)
        self.store_url = in_data_dir(store_url, self.path) if store_url else default_store_url(self.path)
        check_log_url(self.log_url), check_store_url(self.store_url)   # a malformed URL fails here, not later

    @property
    def log_spec(self) -> LogSpec:
        """How another process (a Spark executor, a batch worker) opens this log, read only."""
        return LogSpec(self.log_url, self.log_config, readonly=True)

    def has_log(self) -> bool:
        """Whether the log exists (a file log once something created it; other backends: always)."""
        return not self.log_url.startswith("file://") or (log_path(self.log_url) / "meta.json").exists()

    @cached_property
    def log(self) -> Log:
        from fluvial.errors import LogError

        if not self.writer and self.log_url.startswith("file://") and not (where := log_path(self.log_url)).exists():
            raise LogError(f"no events in {where}: the log is empty. Ingest some first "
                           f"(`fluvial --data-dir {self.path} ingest FILE --kind KIND`)")
        log = open_log(self.log_url, config=self.log_config, readonly=not self.writer)
        return cast("Log", log)   # read only (appends refused) unless this is the writer

    def _lazy_log(self) -> Log:
        return self.log

    @cached_property
    def dead_letters(self) -> DeadLetterLog:
        from fluvial.log import DeadLetterLog

        return DeadLetterLog.open(self.path / "dead-letters", readonly=not self.writer)

    @cached_property
    def store(self) -> ViewStore:
        return open_store(self.store_url)

    @cached_property
    def schemas(self) -> SchemaRegistry:
        from fluvial.events import SchemaRegistry

        file = self.path / "schemas.json"
        return SchemaRegistry.load(file) if file.exists() else SchemaRegistry.with_builtins()

    def save_schemas(self) -> None:
        self.schemas.save(self.path / "schemas.json")

    def batch_runner(self, *, log: LogReader | None = None, **options: Any) -> BatchRunner:
        """A :class:`~fluvial.engine.batch.BatchRunner` over this directory's store and its
        log, or ``log`` (e.g. a Parquet export: ``fluvial.log.parquet.ParquetLog.open(dir)``)."""
        from fluvial.engine.batch import BatchRunner

        # this directory's log (opened or not yet), not an export of it
        own = log is None or log == self._lazy_log or log is self.__dict__.get("log")
        options.setdefault("cache_dir", self.path / "cache")   # persist(DISK) keeps flows there
        return BatchRunner(log=self._lazy_log if own else log, store=self.store, own_log=own, **options)

    def stream_runner(self, config: StreamConfig = DEFAULT_STREAM, **options: Any) -> StreamRunner:
        """A :class:`~fluvial.engine.stream.StreamRunner` over this directory's log and store."""
        from fluvial.engine.stream import StreamRunner

        options.setdefault("lease_ms", config.lease_ms)
        return StreamRunner(log=self._lazy_log, store=lambda: self.store, batch_interval_ms=config.batch_interval_ms,
                            max_batch_records=config.max_batch_records, **options)

    def close(self) -> None:
        for name in ("log", "dead_letters", "store"):
            part = self.__dict__.pop(name, None)
            if part is not None:
                part.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r}, writer={self.writer}, log={self.log_url!r}, store={self.store_url!r})"


def open(path: str | os.PathLike[str], *, writer: bool = False, log_config: LogConfig = DEFAULT_LOG,
         log: str | None = None, store: str | None = None) -> Workspace:
    """Open (creating if needed) the data directory ``path``; its log and store are in it
    unless ``log`` / ``store`` (URLs, see :mod:`fluvial.backends`) put them elsewhere."""
    return Workspace(path, writer=writer, log_config=log_config, log_url=log, store_url=store)
