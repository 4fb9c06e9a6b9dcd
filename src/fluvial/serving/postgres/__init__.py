"""The PostgreSQL view store: views, versions, checkpoints and leases in one schema.

``--store postgresql://[USER@]HOST:PORT/DB?schema=NAME`` (the schema, default
``fluvial``, is created if missing).  It keeps what the SQLite store keeps, in the
same stored form (:mod:`fluvial.serving.stored`), with the same semantics: a
micro-batch commit -- view changes, checkpoint with its compare-and-set token, the
lease fence -- is ONE PostgreSQL transaction.  psycopg 3 is the client (extra
``postgresql``), imported only when a store is opened.

The modules, from the connection up:

- ``schema``: the URL, the tables, connecting, the write lock;
- ``catalog``: the views, their aggregators, windows and parts;
- ``versions``: batch versions, the alias switch, realtime generations, late counts;
- ``rows``: merging and writing stored rows (``COPY``, ``unnest`` arrays);
- ``leases``: ownership epochs (``SELECT ... FOR UPDATE``, ``UPDATE ... WHERE epoch``);
- ``tables``: the ``save_to`` tables;
- ``txn``: :class:`PostgresTxn`, the writes of one transaction;
- ``store``: :class:`PostgresStore`, reads, queries and write transactions.
"""

from fluvial.serving.postgres.schema import DEFAULT_SCHEMA, SCHEMA_VERSION, parse_url
from fluvial.serving.postgres.store import PostgresStore
from fluvial.serving.postgres.txn import PostgresTxn

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStore", "PostgresTxn", "parse_url"]
