"""Serving: the view store protocol, its SQLite implementation, versions and aliases.

Queries return ``batch ⊕ realtime`` rows of one shape:
``{"key": ..., "window": [start_ms, end_ms] | null, "value": ...}``.
"""

from fluvial.serving.base import REALTIME, UNSET, Row, Txn, ViewInfo, ViewStore
from fluvial.serving.sqlite import SqliteStore, SqliteTxn

__all__ = ["REALTIME", "UNSET", "Row", "SqliteStore", "SqliteTxn", "Txn", "ViewInfo", "ViewStore"]
