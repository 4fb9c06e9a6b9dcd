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
from fluvial.flow.graph import set_default_runner as _set_default_runner
from fluvial.flow.storage import StorageLevel
from fluvial.windows import Session, Sliding, Tumbling
from fluvial.workspace import Workspace, open

__version__ = "0.1.0"

_set_default_runner(BatchRunner)   # what Flow.collect() and the other actions run on by default

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
