"""The Cassandra view store: views, versions, checkpoints and leases in one keyspace.

``--store cassandra://HOST[,HOST...][:PORT]/KEYSPACE[?replication_factor=N&consistency=LEVEL]``
(the keyspace is created if missing, ``SimpleStrategy`` with ``replication_factor``,
default 1; every read and write at ``consistency``, default ``QUORUM``).  It keeps
what the SQLite and PostgreSQL stores keep, in the same stored form
(:mod:`fluvial.serving.stored`), with the same semantics for writers: a micro-batch --
view changes, ``save_to`` rows, checkpoint with its compare-and-set token, the lease
fence -- takes effect whole or not at all, and a runner paused past its lease (or
past the store's write lock) commits nothing after a rival took over.

Cassandra has no multi-row transaction; the exactly-once protocol is in
:mod:`.commit` (a fenced write lock taken with lightweight transactions, a redo
record, a commit point that is one lightweight transaction, and writes stamped with
the commit sequence so that a commit applied late or twice never overwrites a newer
one).  Readers are not isolated from a commit being applied: :mod:`.commit` says
exactly what a query may see.  Tested with Apache Cassandra 2.1.0 (native protocol
v3); only CQL that Cassandra 4 and 5 still run is used.  The DataStax
``cassandra-driver`` is the client (extra ``cassandra``), imported only when a store
is opened.

The modules, from the connection up:

- ``address``: the URL;  ``db``: the session, the tables, running statements;
- ``buffer``: a transaction's reads and writes before its commit;
- ``commit``: the write lock, the redo record, the commit point, applying a commit;
- ``catalog``, ``versions``: the views, their versions and realtime generations;
- ``rows``: merging stored rows;  ``leases``: ownership epochs;  ``tables``: ``save_to``;
- ``txn``: :class:`CassandraTxn`;  ``store``: :class:`CassandraStore`.
"""

from fluvial.serving.cassandra.address import parse_url
from fluvial.serving.cassandra.store import CassandraStore
from fluvial.serving.cassandra.txn import CassandraTxn

__all__ = ["CassandraStore", "CassandraTxn", "parse_url"]
