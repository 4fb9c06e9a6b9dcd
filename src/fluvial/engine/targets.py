"""The store a ``save_to`` sink writes to: the runner's, a store object, or a store URL.

``save_to(None, ...)`` writes into the runner's serving store, in the micro-batch's own
transaction.  ``save_to(store, ...)`` writes into another store after that commit (an
idempotent upsert by key): a :class:`~fluvial.serving.base.ViewStore`, or its URL --
the seed's ``saveToCassandra("spark", "wordcount")`` is
``save_to("cassandra://127.0.0.1/spark", "wordcount", ["word", "count"])`` whatever
the serving store is.  A URL is opened once per process and thread (a store object
belongs to one thread) and closed when the process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from typing import Any

from fluvial.errors import ConfigError

__all__ = ["save_target"]

_open: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def save_target(store: Any) -> Any:
    """``store`` itself (``None``: the runner's), or the store its URL names, opened once per thread.

    Raises:
        ConfigError: ``store`` is a string that is not a store URL (the message says what to write).
    """
    if store is None or not isinstance(store, str):
        return store
    from fluvial.backends import check_store_url, open_store

    if "://" not in store:
        raise ConfigError(f"save_to({store!r}, ...): a store is given as None (the runner's store), a store "
                          "object or a store URL such as cassandra://127.0.0.1/spark or sqlite:///tmp/out.db")
    key = (check_store_url(store), threading.get_ident())
    with _lock:
        opened = _open.get(key)
        if opened is None:
            opened = _open[key] = open_store(store)
    return opened


@atexit.register
def _close_all() -> None:
    with _lock:
        for store in _open.values():
            with contextlib.suppress(Exception):   # the process is ending: nothing more to do with it
                store.close()
        _open.clear()
