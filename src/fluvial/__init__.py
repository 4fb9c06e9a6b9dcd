"""fluvial: IoT event data on the Lambda and Kappa architectures.

Events go into an immutable, replayable log; a :class:`Pipeline` of flows,
written once with Spark's vocabulary, runs on the :class:`BatchRunner` (the
batch layer, "the final answer") and the :class:`StreamRunner` (the speed
layer); views merge both.

Example:
    >>> import fluvial as fl, operator
    >>> p = fl.Pipeline("wc")
    >>> lines = p.from_queue([["to be or not to be"]])
    >>> sorted(lines.flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add).collect())
    [('be', 2), ('not', 1), ('or', 1), ('to', 2)]
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from fluvial.aggregators import (
        Aggregator,
        Collect,
        Count,
        Distinct,
        Histogram,
        Last,
        Max,
        Mean,
        Min,
        Reduce,
        Stats,
        Sum,
        TopByValue,
        TopK,
    )
    from fluvial.config import DEFAULT_DATA_DIR, LogConfig, StreamConfig
    from fluvial.engine.batch import BatchRunner, RunStats
    from fluvial.engine.stream import StreamRunner
    from fluvial.errors import (
        ConfigError,
        DecodeError,
        FlowError,
        FluvialError,
        LogError,
        SchemaError,
        StoreError,
        ValidationError,
        ViewNotFound,
    )
    from fluvial.events import Event, Schema, SchemaRegistry
    from fluvial.flow.graph import Flow, Pipeline, Table, Windowed, WindowedFlow
    from fluvial.flow.storage import StorageLevel
    from fluvial.windows import Session, Sliding, Tumbling
    from fluvial.workspace import Workspace, open

__version__ = "0.1.0"

_EXPORTS = {
    "Aggregator": "fluvial.aggregators",
    "Collect": "fluvial.aggregators",
    "Count": "fluvial.aggregators",
    "Distinct": "fluvial.aggregators",
    "Histogram": "fluvial.aggregators",
    "Last": "fluvial.aggregators",
    "Max": "fluvial.aggregators",
    "Mean": "fluvial.aggregators",
    "Min": "fluvial.aggregators",
    "Reduce": "fluvial.aggregators",
    "Stats": "fluvial.aggregators",
    "Sum": "fluvial.aggregators",
    "TopByValue": "fluvial.aggregators",
    "TopK": "fluvial.aggregators",
    "DEFAULT_DATA_DIR": "fluvial.config",
    "LogConfig": "fluvial.config",
    "StreamConfig": "fluvial.config",
    "BatchRunner": "fluvial.engine.batch",
    "RunStats": "fluvial.engine.batch",
    "StreamRunner": "fluvial.engine.stream",
    "ConfigError": "fluvial.errors",
    "DecodeError": "fluvial.errors",
    "FlowError": "fluvial.errors",
    "FluvialError": "fluvial.errors",
    "LogError": "fluvial.errors",
    "SchemaError": "fluvial.errors",
    "StoreError": "fluvial.errors",
    "ValidationError": "fluvial.errors",
    "ViewNotFound": "fluvial.errors",
    "Event": "fluvial.events",
    "Schema": "fluvial.events",
    "SchemaRegistry": "fluvial.events",
    "Flow": "fluvial.flow.graph",
    "Pipeline": "fluvial.flow.graph",
    "Table": "fluvial.flow.graph",
    "Windowed": "fluvial.flow.graph",
    "WindowedFlow": "fluvial.flow.graph",
    "StorageLevel": "fluvial.flow.storage",
    "Session": "fluvial.windows",
    "Sliding": "fluvial.windows",
    "Tumbling": "fluvial.windows",
    "Workspace": "fluvial.workspace",
    "open": "fluvial.workspace",
}
"""Where each public name lives: imported on first use (PEP 562), so that ``import fluvial.edge``
on a device loads the edge package alone, and ``import fluvial`` stays quick."""


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fluvial' has no attribute {name!r}")
    _activate_defaults()
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _activate_defaults() -> None:
    """The local batch runner as what ``Flow.collect()`` and the other actions run on by default
    (the flow package knows no engine): done on first use of the public API, and by
    :func:`fluvial.flow.graph.default_runner` when a flow was built without it."""
    graph = _importlib.import_module("fluvial.flow.graph")
    if graph._default_runner is None:
        graph.set_default_runner(_importlib.import_module("fluvial.engine.batch").BatchRunner)


__all__ = [
    "DEFAULT_DATA_DIR",
    "Aggregator",
    "BatchRunner",
    "Collect",
    "ConfigError",
    "Count",
    "DecodeError",
    "Distinct",
    "Event",
    "Flow",
    "FlowError",
    "FluvialError",
    "Histogram",
    "Last",
    "LogConfig",
    "LogError",
    "Max",
    "Mean",
    "Min",
    "Pipeline",
    "Reduce",
    "RunStats",
    "Schema",
    "SchemaError",
    "SchemaRegistry",
    "Session",
    "Sliding",
    "Stats",
    "StorageLevel",
    "StoreError",
    "StreamConfig",
    "StreamRunner",
    "Sum",
    "Table",
    "TopByValue",
    "TopK",
    "Tumbling",
    "ValidationError",
    "ViewNotFound",
    "Windowed",
    "WindowedFlow",
    "Workspace",
    "open",
]
