"""Serving: the view store protocol, what every store shares, and the SQLite store.

Queries return ``batch ⊕ realtime`` rows of one shape:
``{"key": ..., "window": [start_ms, end_ms] | null, "value": ...}``.

- ``base``: the protocols (:class:`ViewStore`, :class:`Txn`) and :class:`Row`, :class:`ViewInfo`;
- ``keys``, ``stored``: the stored form of a view (canonical keys, windows, accumulators);
- ``compose``: the merged query, batch version ⊕ realtime generations, windows from panes;
- ``tables``: the ``save_to`` tables;
- ``sqlite``: the embedded store, one SQLite file (:class:`SqliteStore`).
"""

from fluvial.serving.base import REALTIME, UNSET, Row, Txn, ViewInfo, ViewStore
from fluvial.serving.sqlite import SqliteStore, SqliteTxn

__all__ = ["REALTIME", "UNSET", "Row", "SqliteStore", "SqliteTxn", "Txn", "ViewInfo", "ViewStore"]
