"""View-store writes in rows/s: the embedded SQLite store next to PostgreSQL and Cassandra, same data, same run.

    python bench/store_writes.py [--rows 200000] [--batch 2000] [--repeat 3]
                                 [--postgres postgresql://postgres@127.0.0.1:5432/test]
                                 [--cassandra cassandra://127.0.0.1:9042]

Three workloads, each timed on a fresh store (a new SQLite file; a new PostgreSQL
schema, a new Cassandra keyspace, dropped after), median of ``--repeat`` runs:

* ``batch version``: a batch run writing a new version, ``--rows`` rows in one
  ``merge_rows`` (PostgreSQL: binary ``COPY``);
* ``micro-batches``: the speed layer, ``--batch`` rows per transaction with a
  checkpoint (compare-and-set) and the lease fence, half of each batch's keys
  already stored (read, merge, update), until ``--rows`` rows;
* ``put rows``: ``put_rows`` (overwrites) in transactions of ``--batch`` rows.

Needs the ``postgresql`` extra and a PostgreSQL server (trust auth on loopback here);
with ``--cassandra`` (a node's ``cassandra://HOST:PORT``, no keyspace), the ``cassandra``
extra and that node (the tests' node: ``PYTHONPATH=tests python -c "import cassandra_node as c;
print(c.start_node(__import__('pathlib').Path('/tmp/bench-cassandra')))"``).
"""

from __future__ import annotations

import argparse
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fluvial.aggregators import Count
from fluvial.backends import open_store
from fluvial.serving.base import ViewStore
from fluvial.state.ownership import Owner
from fluvial.windows.shapes import Tumbling

WINDOW_MS = 60_000


def rows_of(n: int, keys: int, offset: int = 0) -> list[tuple[Any, Any, float]]:
    """``n`` rows over ``keys`` devices and one-minute windows (distinct places)."""
    return [(f"device-{(i + offset) % keys}", ((i + offset) // keys * WINDOW_MS, (i + offset) // keys * WINDOW_MS
                                                + WINDOW_MS), 3) for i in range(n)]


def batch_version(store: ViewStore, n: int, batch: int) -> None:
    version = store.begin_version("v")
    data = rows_of(n, 1_000)
    with store.transaction() as txn:
        txn.merge_rows("v", data, part=version)


def micro_batches(store: ViewStore, n: int, batch: int) -> None:
    lease = store.claim("stream:bench", Owner.this_process("bench"), lease_ms=60_000)
    token = None
    for start in range(0, n, batch):
        # half of each batch meets the rows of the previous one (updates), half is new
        data = rows_of(batch, 1_000, offset=max(0, start - batch // 2))
        with store.transaction() as txn:
            txn.fence(lease)
            txn.merge_rows("v", data)
            token = txn.set_checkpoint("stream:bench", b"x" * 200, expect=token)
    store.release(lease)


def put_rows(store: ViewStore, n: int, batch: int) -> None:
    for start in range(0, n, batch):
        with store.transaction() as txn:
            txn.put_rows("v", rows_of(batch, 1_000, offset=start))


WORKLOADS: dict[str, Callable[[ViewStore, int, int], None]] = {
    "batch version": batch_version, "micro-batches": micro_batches, "put rows": put_rows}


def timed(url: str, work: Callable[[ViewStore, int, int], None], n: int, batch: int) -> float:
    store = open_store(url)
    try:
        store.define_view("v", aggregator=Count(), window=Tumbling(length_ms=WINDOW_MS))
        started = time.perf_counter()
        work(store, n, batch)
        return n / (time.perf_counter() - started)
    finally:
        store.close()


def drop_schema(base: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def drop_keyspace(base: str, keyspace: str) -> None:
    from fluvial.serving.cassandra.address import parse_url
    from fluvial.serving.cassandra.db import Db

    db = Db(parse_url(f"{base}/{keyspace}"))
    try:
        db.session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        db.close()


def measure(kind: str, base: str, work: Callable[[ViewStore, int, int], None], n: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sqlite":
            return timed(f"sqlite://{Path(tmp) / 'views.db'}", work, n, batch)
        if kind == "cassandra":
            keyspace = f"bench_{secrets.token_hex(4)}"
            try:
                return timed(f"{base}/{keyspace}", work, n, batch)
            finally:
                drop_keyspace(base, keyspace)
        schema = f"bench_{secrets.token_hex(4)}"
        try:
            return timed(f"{base}?schema={schema}", work, n, batch)
        finally:
            drop_schema(base, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cassandra", default=None, help="cassandra://HOST:PORT of a node (no keyspace)")
    args = parser.parse_args(argv)
    kinds = {"sqlite": "", "postgresql": args.postgres, **({"cassandra": args.cassandra} if args.cassandra else {})}
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}; "
          f"{args.rows:,} rows, {args.batch:,} per transaction, median of {args.repeat}")
    print(f"{'workload':<16}" + "".join(f"{kind + ' rows/s':>20}" for kind in kinds)
          + "".join(f"{kind[:2] + ' / sqlite':>14}" for kind in kinds if kind != "sqlite"))
    for name, work in WORKLOADS.items():
        medians = {kind: statistics.median(measure(kind, base, work, args.rows, args.batch)
                                           for _ in range(args.repeat)) for kind, base in kinds.items()}
        print(f"{name:<16}" + "".join(f"{medians[kind]:>20,.0f}" for kind in kinds)
              + "".join(f"{medians[kind] / medians['sqlite']:>14.2f}" for kind in kinds if kind != "sqlite"),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
