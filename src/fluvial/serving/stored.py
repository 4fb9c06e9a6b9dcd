"""The stored form of a view, the same in every store.

A view's rows are stored as ``(view_id, part, key, wstart, wend, acc)``:

- ``part``: a batch version (>= 1), or a realtime generation;
- ``key``: the canonical bytes of the key (:func:`fluvial.serving.keys.encode_key`);
- ``wstart``, ``wend``: the stored window, a storage pane of the view's window shape
  (a sliding window is stored as its panes, a session as fragments), or
  :data:`NO_WINDOW` twice for rows without window;
- ``acc``: the pickled accumulator.

The aggregator of a view (and of a batch version written with changed code) is
stored with ``cloudpickle``, so that user aggregators (lambdas) load in any process
that can import their module.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fluvial.aggregators.base import Aggregator
from fluvial.errors import CheckpointFenced, ConfigError, StoreError
from fluvial.serving.base import Key, Window
from fluvial.serving.keys import encode_key
from fluvial.windows.shapes import Explicit, Session, Sliding, Tumbling, WindowShape

NO_WINDOW = -(2**63)
"""``wstart``/``wend`` of rows without window (NULLs are distinct in primary keys)."""
ACC_PROTOCOL = pickle.HIGHEST_PROTOCOL
"""The pickle protocol of stored accumulators."""


@dataclass(frozen=True)
class ViewMeta:
    """What a store knows of a view while it reads or writes its rows.

    Attributes:
        view_id: The store's number for the view.
        name: The view name.
        agg: The aggregator of the part being read or written.
        shape: The window shape of that part (``None``: no window).
        alias: The current batch version (``None`` before the first publish).
        previous: The version a rollback would switch back to.
        rt_gen: The open realtime generation.
    """

    view_id: int
    name: str
    agg: Aggregator[Any, Any, Any]
    shape: WindowShape | None
    alias: int | None
    previous: int | None
    rt_gen: int


def check_aggregator(view: str, aggregator: Any) -> Aggregator[Any, Any, Any]:
    if not isinstance(aggregator, Aggregator):
        raise ConfigError(f"view {view!r}: aggregator must be an Aggregator, got {aggregator!r}")
    return aggregator


def check_shape(view: str, window: Any) -> WindowShape | None:
    if window is not None and not isinstance(window, WindowShape):
        raise ConfigError(f"view {view!r}: window must be a WindowShape or None, got {window!r}")
    return window


def dump_aggregator(view: str, aggregator: Any) -> bytes:
    """The stored form of a view's aggregator (``cloudpickle``)."""
    check_aggregator(view, aggregator)
    try:
        blob: bytes = cloudpickle.dumps(aggregator)
    except Exception as exc:
        raise ConfigError(f"view {view!r}: the aggregator cannot be pickled: {exc!r}") from exc
    return blob


def load_aggregator(view: str, blob: bytes) -> Aggregator[Any, Any, Any]:
    try:
        return cloudpickle.loads(blob)  # type: ignore[no-any-return]
    except Exception as exc:
        raise StoreError(f"cannot load the aggregator of view {view!r}: {exc!r} (is the "
                         "module that defines it importable in this process?)") from exc


def encode_rows(meta: ViewMeta, part_no: int, rows: Iterable[tuple[Key, Window | None, Any]],
                counter: list[int], *, skip_zero: bool) -> Iterator[tuple[Any, ...]]:
    """The stored rows ``(view_id, part, key, wstart, wend, acc)`` of ``(key, window, acc)``
    rows, checking on the way that each window is a storage window of the view's shape;
    ``counter[0]`` is then the number of rows read (zeros skipped with ``skip_zero`` too)."""
    view_id, shape, name = meta.view_id, meta.shape, meta.name
    is_zero = meta.agg.is_zero
    dumps = pickle.dumps
    if isinstance(shape, (Tumbling, Sliding)):
        pane = shape.pane_ms if isinstance(shape, Sliding) else shape.length_ms
        offset, min_len = shape.offset_ms, None
    elif isinstance(shape, Session):
        pane, offset, min_len = None, 0, shape.gap_ms
    explicit = isinstance(shape, Explicit)
    n = 0
    try:
        for key, window, acc in rows:
            n += 1
            if skip_zero and is_zero(acc):
                continue
            if explicit:
                if window is None:
                    start = end = NO_WINDOW
                else:
                    start, end = window
                    if type(start) is not int or type(end) is not int or end <= start:
                        raise ConfigError(f"view {name!r}: window {window!r} must be integer ms "
                                          "with start < end")
            elif shape is None:
                if window is not None:
                    raise ConfigError(f"view {name!r} has no window, but a row has window {window!r}")
                start = end = NO_WINDOW
            else:
                if window is None:
                    raise ConfigError(f"view {name!r} has window {shape.spec()}, but a row has "
                                      f"window None (key {key!r})")
                start, end = window
                if type(start) is not int or type(end) is not int:
                    raise ConfigError(f"view {name!r}: window {window!r} must hold integer ms")
                if pane is not None:
                    if end - start != pane or (start - offset) % pane:
                        raise ConfigError(
                            f"view {name!r}: window {window!r} is not a storage pane of "
                            f"{shape.spec()} (expected shape.storage_window(ts), {pane} ms long)")
                elif end - start < min_len:  # type: ignore[operator]
                    raise ConfigError(f"view {name!r}: session fragment {window!r} is shorter "
                                      f"than the gap ({min_len} ms)")
            yield (view_id, part_no, encode_key(key), start, end, dumps(acc, ACC_PROTOCOL))
    finally:
        counter[0] = n


def primary_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(key, wstart, wend)`` of a stored row of :func:`encode_rows`: its order within a part."""
    return row[2], row[3], row[4]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while building or reading many rows: they hold no
    cycles, and the collector's passes over a large heap cost more than the work."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def new_checkpoint_token(runner_id: str, expect: Any, current: Any, where: str) -> int:
    """A fresh fencing token for a checkpoint write, after the checks every store makes:
    ``runner_id`` is a non-empty string, and with ``expect`` (the token the writer read,
    ``None``: no checkpoint; an ``_Unset``: no check) the ``current()`` token is still that
    one, else :class:`CheckpointFenced` voids the writer's transaction."""
    import secrets

    from fluvial.serving.base import _Unset

    if not isinstance(runner_id, str) or not runner_id:
        raise ConfigError(f"runner_id must be a non-empty string, got {runner_id!r}")
    if not isinstance(expect, _Unset):
        token = current()
        if token != expect:
            raise CheckpointFenced(
                f"the checkpoint {runner_id!r} in {where} was replaced by another writer "
                f"(token {token}, this writer read {expect}): its micro-batch is not committed; "
                "the runner reloads the checkpoint and goes on from there")
    return secrets.randbits(62) + 1
