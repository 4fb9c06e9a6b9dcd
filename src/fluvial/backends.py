"""Backends chosen by URL: ``open_log(url)`` and ``open_store(url)``.

==========================  =====================================================
URL                         backend
==========================  =====================================================
``file://DIR``              the embedded log: segment files in ``DIR`` (default
                            ``DATA_DIR/log``); :class:`~fluvial.log.local.LocalLog`
``parquet://DIR``           a Parquet export of a log (read only, for batch runs);
                            :class:`~fluvial.log.parquet.ParquetLog`
``nats://HOST:PORT/NAME``   a log on NATS JetStream (``HOST:PORT,HOST:PORT,...``
                            for a cluster; ``?replicas=3``); streams ``NAME-*``;
                            :class:`~fluvial.log.nats.NatsLog`
``sqlite:///PATH``          the embedded view store in one SQLite file (default
                            ``DATA_DIR/views.db``); :class:`~fluvial.serving.sqlite.SqliteStore`
``postgresql://[USER@]``    views in PostgreSQL: ``HOST[:PORT]/DB[?schema=NAME]``
                            (schema ``fluvial`` by default, created if absent; extra
                            ``postgresql``); :class:`~fluvial.serving.postgres.PostgresStore`
``cassandra://HOST[,HOST]`` views in Cassandra: ``[:PORT]/KEYSPACE[?replication_factor=N&
                            consistency=LEVEL]`` (keyspace created if absent; extra
                            ``cassandra``); :class:`~fluvial.serving.cassandra.CassandraStore`
==========================  =====================================================

For ``file``, ``parquet`` and ``sqlite``, what follows the ``scheme://`` is a path: ``file:///var/lib/fluvial/log`` is
absolute, ``file://log`` relative to the working directory.  The command line
takes them as ``--log URL`` / ``--store URL`` (env ``FLUVIAL_LOG``,
``FLUVIAL_STORE``; ``log_url`` / ``store_url`` in ``fluvial.toml``); without
them, both live in the data directory.  ``{data_dir}`` in a URL stands for the
data directory (``file://{data_dir}/log`` is the default spelled out), so one
setting fits many directories.

A :class:`LogSpec` is what a process needs to open a log itself -- a Spark
executor, a batch worker process -- and pickles as a few strings and numbers.
Every backend implements the protocols of :mod:`fluvial.log.base` and
:mod:`fluvial.serving.base` (docs/architecture.md lists their methods and
contracts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from fluvial.config import DEFAULT_LOG, LogConfig
from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.log.base import Log, LogReader
    from fluvial.serving.base import ViewStore

__all__ = ["LOG_SCHEMES", "STORE_SCHEMES", "LogSpec", "check_log_url", "check_store_url", "default_log_url",
           "default_store_url", "log_path", "open_log", "open_store", "spec_of", "store_path"]

LOG_SCHEMES = ("file", "parquet", "nats")
STORE_SCHEMES = ("sqlite", "postgresql", "cassandra")


def _split(url: str, what: str, schemes: tuple[str, ...], flag: str) -> tuple[str, str]:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{flag} {url!r} is not a {what} URL: write SCHEME://PATH, with SCHEME one of "
                          f"{', '.join(schemes)} (e.g. {schemes[0]}:///var/lib/fluvial/"
                          f"{'log' if what == 'log' else 'views.db'})")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in schemes:
        raise ConfigError(f"{flag} {url!r}: no {what} backend for {scheme + '://'!r}; this fluvial has "
                          f"{', '.join(s + '://' for s in schemes)}")
    if not rest:
        raise ConfigError(f"{flag} {url!r} names no path after {scheme}://")
    return scheme, rest


DATA_DIR_FIELD = "{data_dir}"
"""Stands for the data directory in a URL: ``file://{data_dir}/log`` (one setting for many directories)."""


def in_data_dir(url: str, data_dir: str | os.PathLike[str]) -> str:
    """``url`` with :data:`DATA_DIR_FIELD` replaced by the absolute path of ``data_dir``.

    >>> in_data_dir("sqlite://{data_dir}/views.db", "/srv/fluvial")
    'sqlite:///srv/fluvial/views.db'
    """
    return url.replace(DATA_DIR_FIELD, str(Path(data_dir).absolute())) if DATA_DIR_FIELD in url else url


def default_log_url(data_dir: str | os.PathLike[str]) -> str:
    return f"file://{Path(data_dir).absolute() / 'log'}"


def default_store_url(data_dir: str | os.PathLike[str]) -> str:
    return f"sqlite://{Path(data_dir).absolute() / 'views.db'}"


def check_log_url(url: str) -> str:
    """``url`` if it is a well-formed log URL (a ``nats://`` one is checked whole), else ConfigError."""
    scheme, _ = _split(url, "log", LOG_SCHEMES, "--log")
    if scheme == "nats":
        from fluvial.log.nats.address import parse_url

        parse_url(url)
    return url


def log_path(url: str) -> Path:
    """The directory of a ``file://`` or ``parquet://`` log."""
    scheme, rest = _split(url, "log", LOG_SCHEMES, "--log")
    if scheme == "nats":
        raise ConfigError(f"--log {url!r} is a log on NATS, not a directory: this needs a file:// log")
    return Path(rest)


def store_path(url: str) -> Path:
    """The file of a ``sqlite://`` store."""
    scheme, rest = _split(url, "store", STORE_SCHEMES, "--store")
    if scheme != "sqlite":
        raise ConfigError(f"--store {url!r} is a {scheme}:// store, not a file: it has no path")
    return Path(rest)


def check_store_url(url: str) -> str:
    """``url`` if it is a well-formed store URL (checked before anything is opened).

    Raises:
        ConfigError: An unknown scheme, or a malformed URL (the message says what to write).
    """
    scheme, _ = _split(url, "store", STORE_SCHEMES, "--store")
    if scheme == "postgresql":
        from fluvial.serving.postgres.schema import parse_url

        parse_url(url)
    if scheme == "cassandra":
        from fluvial.serving.cassandra.address import parse_url as parse_cassandra_url

        parse_cassandra_url(url)
    return url


@dataclass(frozen=True)
class LogSpec:
    """How to open a log: picklable, for executors and worker processes that open it themselves."""

    url: str
    config: LogConfig = DEFAULT_LOG
    readonly: bool = True

    def open(self) -> Any:
        return open_log(self.url, config=self.config, readonly=self.readonly)


def spec_of(log: Any) -> LogSpec:
    """How another process opens ``log`` read only (a Spark executor, a batch worker).

    Raises:
        ConfigError: ``log`` cannot be opened again elsewhere (an in-memory test log).
    """
    spec = getattr(log, "spec", None)
    if callable(spec):
        return spec()  # type: ignore[no-any-return]
    from fluvial.log import LocalLog
    from fluvial.log.parquet import ParquetLog

    if isinstance(log, LocalLog):
        return LogSpec(f"file://{Path(log.path).absolute()}")
    if isinstance(log, ParquetLog):
        return LogSpec(f"parquet://{Path(log.path).absolute()}")
    raise ConfigError(f"a {type(log).__name__} cannot be opened again by another process (a Spark "
                      "executor, a worker): give the runner a log opened from a URL (file://, parquet://, nats://)")


@overload
def open_log(url: str, *, config: LogConfig = ..., readonly: Literal[False] = ...) -> Log: ...


@overload
def open_log(url: str, *, config: LogConfig = ..., readonly: bool) -> LogReader: ...


def open_log(url: str, *, config: LogConfig = DEFAULT_LOG, readonly: bool = False) -> LogReader:
    """Open the log at ``url``: a :class:`~fluvial.log.base.Log` to append to, or with ``readonly``
    a :class:`~fluvial.log.base.LogReader` (a Parquet export is only that); a writer creates it if missing.

    Raises:
        ConfigError: An unknown scheme, or a malformed URL.
        LogError: The log cannot be opened (the message says where and why).
    """
    scheme, rest = _split(url, "log", LOG_SCHEMES, "--log")
    if scheme == "nats":
        from fluvial.log.nats import NatsLog

        return NatsLog.open(url, config=config, readonly=readonly)
    if scheme == "parquet":
        if not readonly:
            raise ConfigError(f"--log {url!r}: a Parquet export is read only (batch runs read it; "
                              "appends go to a file:// log)")
        from fluvial.log.parquet import ParquetLog

        return ParquetLog.open(rest)
    from fluvial.log import LocalLog

    return LocalLog.open(rest, partitions=config.partitions, fsync=config.fsync,  # type: ignore[arg-type]
                         fsync_interval_ms=config.fsync_interval_ms, segment_bytes=config.segment_bytes,
                         readonly=readonly)


def open_store(url: str) -> ViewStore:
    """Open (creating if missing) the view store at ``url`` (a :class:`~fluvial.serving.base.ViewStore`).

    Raises:
        ConfigError: An unknown scheme, or a malformed URL.
        StoreError: The store cannot be opened (a PostgreSQL server out of reach: the message
            names its host and port).
        MissingDependency: ``postgresql://`` without psycopg (the ``postgresql`` extra), or
            ``cassandra://`` without the cassandra-driver (the ``cassandra`` extra).
    """
    scheme, rest = _split(url, "store", STORE_SCHEMES, "--store")
    if scheme == "postgresql":
        from fluvial.serving.postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "cassandra":
        from fluvial.serving.cassandra import CassandraStore

        return CassandraStore(url)
    from fluvial.serving import SqliteStore

    path = Path(rest)
    if rest != ":memory:":
        if path.is_dir():
            raise ConfigError(f"--store {url!r}: {path} is a directory; name the SQLite file "
                              f"(e.g. sqlite://{path / 'views.db'})")
        path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)


if TYPE_CHECKING:   # what mypy holds (tests/unit/test_typing.py): each embedded backend is its protocol
    from fluvial.log import LocalLog
    from fluvial.log.nats import NatsLog
    from fluvial.log.parquet import ParquetLog
    from fluvial.serving.cassandra import CassandraStore
    from fluvial.serving.postgres import PostgresStore
    from fluvial.serving.sqlite import SqliteStore

    def _embedded_backends_fit(log: LocalLog, export: ParquetLog, store: SqliteStore
                               ) -> tuple[Log, LogReader, ViewStore]:
        return log, export, store

    def _server_backends_fit(store: PostgresStore, cassandra: CassandraStore) -> tuple[ViewStore, ViewStore]:
        return store, cassandra

    def _distributed_backends_fit(log: NatsLog) -> Log:
        return log
