"""Connecting to Cassandra, the store's tables, and running statements.

A store lives in one keyspace, created with its tables when missing
(``SimpleStrategy`` with the URL's replication factor).  The DataStax
``cassandra-driver`` (extra ``cassandra``) is the client, imported only when a store
is opened, with ``protocol_version=3``: the oldest native protocol of the servers
this runs on (Cassandra 2.1 speaks it, 4 and 5 still do).  Only CQL of Cassandra 2.1
that 4 and 5 still run is used: no materialized views, no range deletes, no ``JSON``.

The tables (every write to those marked *versioned* goes through the commit protocol
of :mod:`.commit`, with a write timestamp taken from the commit sequence):

- ``fluvial_views``, ``fluvial_versions``, ``fluvial_rows``, ``fluvial_checkpoints``,
  ``fluvial_tables`` and the ``save_to`` tables: versioned;
- ``fluvial_lock``: the store's write lock and commit sequence (lightweight transactions only);
- ``fluvial_leases``: ownership epochs (lightweight transactions only);
- ``fluvial_redo``: the write-ahead record of a commit, deleted once applied;
- ``fluvial_meta``: the schema version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from fluvial.errors import MissingDependency, StoreError, StoreUnavailable
from fluvial.serving.cassandra.address import CassTarget

__all__ = ["BUCKETS", "SCHEMA_VERSION", "Db"]

SCHEMA_VERSION = 1
ATTEMPTS = 6
SCHEMA_WAIT_S = 30.0
"""How long a process waits for another to create the store's tables."""
"""How many times an idempotent statement is tried when a node goes away under it."""
BUCKETS = 8
"""Each part of a view is spread over this many partitions (``crc32(key) % BUCKETS``)."""
CONNECT_TIMEOUT_S = 10
REQUEST_TIMEOUT_S = 30
CONCURRENCY = 48

TABLES = [
    """CREATE TABLE IF NOT EXISTS fluvial_meta (name text PRIMARY KEY, value bigint)""",
    """CREATE TABLE IF NOT EXISTS fluvial_views (
        name text PRIMARY KEY, view_id bigint, aggregator blob, agg_spec text, agg_rev bigint,
        window_spec text, alias_version bigint, previous_version bigint, next_version bigint,
        created_ms bigint, updated_ms bigint, late_events bigint, rt_gen bigint, rt_floor bigint,
        sealed_gen bigint, sealed_late bigint)""",
    """CREATE TABLE IF NOT EXISTS fluvial_versions (
        view_id bigint, version bigint, cutoff text, created_ms bigint, published_ms bigint,
        aggregator blob, agg_spec text, window_spec text, late_events bigint, cutoff_tails text,
        PRIMARY KEY (view_id, version))""",
    # part: a batch version (>= 1), or realtime generation g stored as -g
    """CREATE TABLE IF NOT EXISTS fluvial_rows (
        view_id bigint, part bigint, bucket int, key blob, wstart bigint, wend bigint, acc blob,
        PRIMARY KEY ((view_id, part, bucket), key, wstart, wend))""",
    """CREATE TABLE IF NOT EXISTS fluvial_checkpoints (
        runner_id text PRIMARY KEY, blob blob, updated_ms bigint, fence_token bigint)""",
    """CREATE TABLE IF NOT EXISTS fluvial_tables (name text PRIMARY KEY, columns text, key_columns int)""",
    """CREATE TABLE IF NOT EXISTS fluvial_leases (
        resource text PRIMARY KEY, epoch bigint, owner text, since_ms bigint, renewed_ms bigint,
        lease_ms bigint)""",
    """CREATE TABLE IF NOT EXISTS fluvial_lock (
        name text PRIMARY KEY, holder text, expires_ms bigint, seq bigint, pending text, body blob)""",
    """CREATE TABLE IF NOT EXISTS fluvial_redo (txid text, chunk int, body blob, PRIMARY KEY (txid, chunk))""",
]


def driver_errors() -> tuple[type[BaseException], ...]:
    """The exceptions the driver raises (not all derive from its ``DriverException``)."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return DriverException, NoHostAvailable, ConnectionException


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that another try may not meet (a node down or slow)."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return isinstance(exc, (OperationTimedOut, ReadTimeout, WriteTimeout, Unavailable, NoHostAvailable,
                            ConnectionException))


def _driver() -> Any:
    try:
        import cassandra.cluster
    except ImportError as exc:
        raise MissingDependency("the cassandra:// store needs the DataStax cassandra-driver: "
                                "pip install 'fluvial[cassandra]'") from exc
    return cassandra


class Db:
    """A session on the store's keyspace, its prepared statements, and the levels it uses."""

    def __init__(self, target: CassTarget) -> None:
        driver = _driver()
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import RoundRobinPolicy

        self.target = target
        self.where = target.where()
        self.level = getattr(ConsistencyLevel, target.consistency)
        self.serial = (ConsistencyLevel.LOCAL_SERIAL if target.consistency.startswith("LOCAL")
                       else ConsistencyLevel.SERIAL)
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), consistency_level=self.level,
                                   serial_consistency_level=self.serial, request_timeout=REQUEST_TIMEOUT_S)
        self.cluster = Cluster(list(target.hosts), port=target.port, protocol_version=3,
                               connect_timeout=CONNECT_TIMEOUT_S, control_connection_timeout=CONNECT_TIMEOUT_S,
                               execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                               schema_metadata_enabled=False, token_metadata_enabled=False)
        try:
            self.session = self.cluster.connect()
        except driver.cluster.NoHostAvailable as exc:
            self.cluster.shutdown()
            reasons = "; ".join(f"{host}: {err}" for host, err in exc.errors.items()) or str(exc)
            raise StoreUnavailable(f"cannot reach the Cassandra store at {','.join(target.hosts)}:{target.port} "
                             f"({reasons}). Is Cassandra running there and listening for CQL clients "
                             "(native_transport_port)? Check the hosts and port in --store (env FLUVIAL_STORE)"
                             ) from None
        try:
            self._create_or_check()
        except BaseException:
            self.close()
            raise

    def _create_or_check(self) -> None:
        """Create the keyspace and its tables, or check the schema version.

        Cassandra cannot take two creations of one table at once (they would get two table
        ids: "Column family ID mismatch"), so one process creates them: the one whose
        ``CREATE KEYSPACE`` made the keyspace.  The others wait for its last step, the schema
        version row -- and take over if it does not come (the creator died half way).
        """
        from cassandra import AlreadyExists

        ks = self.target.keyspace
        try:
            self.session.execute(
                f"CREATE KEYSPACE {ks} WITH replication = "
                f"{{'class': 'SimpleStrategy', 'replication_factor': {self.target.replication_factor}}}")
            creator = True
        except AlreadyExists:
            creator = False
        self.session.set_keyspace(ks)
        version = None if creator else self._version(wait_s=SCHEMA_WAIT_S)
        if version is not None:
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.where} has view store schema {version}; this fluvial knows "
                                 f"{SCHEMA_VERSION}: upgrade fluvial")
            return
        for statement in TABLES:
            self._create(statement)
        self.session.execute("INSERT INTO fluvial_lock (name, holder, expires_ms, seq, pending) "
                             "VALUES ('write', '', 0, 0, '') IF NOT EXISTS")
        self.session.execute("INSERT INTO fluvial_meta (name, value) VALUES ('schema_version', %s)",
                             (SCHEMA_VERSION,))

    def _version(self, *, wait_s: float) -> int | None:
        """The schema version row, waited for up to ``wait_s`` (``None``: it never came)."""
        from cassandra import InvalidRequest

        deadline = time.monotonic() + wait_s
        while True:
            try:   # (a timeout of a busy ring is tried again, as every read is)
                row = self.retrying(lambda: self.session.execute(
                    "SELECT value FROM fluvial_meta WHERE name = 'schema_version'").one())
            except InvalidRequest:   # no such table yet
                row = None
            if row is not None:
                return int(row.value)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def _create(self, statement: str) -> None:
        """One ``CREATE TABLE IF NOT EXISTS``, tried again if another process created it meanwhile."""
        for attempt in range(ATTEMPTS):
            try:
                self.session.execute(statement)
                return
            except driver_errors() as exc:
                if "mismatch" not in str(exc).lower() or attempt == ATTEMPTS - 1:
                    raise
                self.cluster.control_connection.wait_for_schema_agreement()
                time.sleep(0.2)

    def prepare(self, cql: str) -> Any:
        statement = self._prepared.get(cql)
        if statement is None:
            with self._lock:
                statement = self._prepared.get(cql)
                if statement is None:
                    statement = self._prepared[cql] = self.session.prepare(cql)
        return statement

    def run(self, cql: str, params: Sequence[Any] = (), *, serial: bool = False, retry: bool = True) -> Any:
        """Execute one prepared statement (``serial``: read through Paxos, seeing every LWT).

        Every statement but a lightweight transaction is idempotent here (reads, and writes of
        absolute values stamped with their commit): one that fails because a node went away
        (a timeout, no replica up for a moment) is tried again, up to :data:`ATTEMPTS` times.
        """
        from cassandra.query import BoundStatement

        bound = BoundStatement(self.prepare(cql), consistency_level=self.serial if serial else self.level)
        bound.is_idempotent = retry
        bound = bound.bind(list(params))
        return self.retrying(lambda: self.session.execute(bound), retry=retry)

    def retrying(self, work: Any, *, retry: bool = True) -> Any:
        """``work()``, tried again after a transient failure (a node down, a timeout) when ``retry``."""
        for attempt in range(ATTEMPTS if retry else 1):
            try:
                return work()
            except driver_errors() as exc:
                if not retry or not transient(exc) or attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def rows(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.run(cql, params))

    def lwt(self, cql: str, params: Sequence[Any] = ()) -> tuple[bool, Any]:
        """A lightweight transaction: whether it applied, and the row it returned.  Not tried
        again: a failure leaves its outcome unknown, which the caller finds out by reading."""
        row = self.run(cql, params, retry=False).one()
        return bool(row[0]), row

    def many(self, statements: Iterable[tuple[Any, Sequence[Any]]]) -> list[Any]:
        """Execute ``(statement or cql, params)`` pairs concurrently; the results in order
        (the first error raised)."""
        from cassandra.concurrent import execute_concurrent

        bound = []
        for statement, params in statements:
            bound.append((self.prepare(statement).bind(list(params)) if isinstance(statement, str) else statement,
                          ()))
        if not bound:
            return []
        for statement, _ in bound:
            statement.is_idempotent = True
        results = self.retrying(lambda: execute_concurrent(self.session, bound, concurrency=CONCURRENCY,
                                                           raise_on_first_error=True))
        return [result for _ok, result in results]

    def batch(self, statements: list[tuple[str, Sequence[Any]]]) -> Any:
        """One unlogged batch (statements of ONE partition: applied as one mutation)."""
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self.level)
        for cql, params in statements:
            batch.add(self.prepare(cql), list(params))
        return batch

    def close(self) -> None:
        self.cluster.shutdown()
