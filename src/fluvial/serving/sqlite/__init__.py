"""The embedded view store: one SQLite file in WAL mode.

Safe for one writer process and any number of reader processes: writes run in
``BEGIN IMMEDIATE`` transactions, every query reads one snapshot, and a reader
never waits for the writer (WAL).  Accumulators are pickled; the view's
aggregator is stored with ``cloudpickle`` so that user aggregators (lambdas)
can merge rows inside SQLite: ``merge_rows`` is one ``INSERT ... ON CONFLICT DO
UPDATE SET acc = fluvial_merge(...)`` statement run with ``executemany``.

The modules, from the connection up:

- ``schema``: the tables, their migrations, opening the file;
- ``catalog``: the views, their aggregators, windows and parts;
- ``versions``: batch versions, the alias switch, realtime generations, late counts;
- ``leases``: ownership epochs (:mod:`fluvial.state.ownership`);
- ``tables``: the ``save_to`` tables;
- ``txn``: :class:`SqliteTxn`, the writes of one transaction;
- ``store``: :class:`SqliteStore`, reads, queries and write transactions.

What is not SQLite's (the stored form of rows, the merged query) is shared by every
store: :mod:`fluvial.serving.stored`, :mod:`fluvial.serving.compose`.

Example:
    >>> from fluvial.serving.sqlite import SqliteStore
    >>> from fluvial.aggregators.base import Aggregator
    >>> class Count(Aggregator):
    ...     name = "count"
    ...     def zero(self): return 0
    ...     def add(self, acc, value): return acc + 1
    ...     def merge(self, a, b): return a + b
    >>> with SqliteStore(":memory:") as store:
    ...     _ = store.define_view("hits", aggregator=Count())
    ...     with store.transaction() as txn:
    ...         _ = txn.merge_rows("hits", [("a", None, 2), ("a", None, 3)])
    ...     store.query("hits")
    [Row(key='a', window=None, value=5)]
"""

from fluvial.serving.sqlite.schema import DEFAULT_BUSY_TIMEOUT_MS, SCHEMA_VERSION
from fluvial.serving.sqlite.store import SqliteStore
from fluvial.serving.sqlite.txn import SqliteTxn

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "SqliteStore", "SqliteTxn"]
