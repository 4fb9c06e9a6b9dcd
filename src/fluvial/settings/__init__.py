"""The settings of ``fluvial serve`` and friends, read from ``fluvial.toml``.

Every setting has a default, so the file is optional, and so is every section
and key in it. A complete file with the defaults::

    data_dir = ".fluvial"            # relative paths: against the folder of this file
    log_url = "file:///var/lib/fluvial/log"     # default: DATA_DIR/log (see fluvial.backends)
    store_url = "sqlite:///var/lib/fluvial/views.db"   # default: DATA_DIR/views.db

    [server]
    host = "127.0.0.1"
    port = 8470
    auth = "auto"                    # auto (tokens unless host is loopback) | tokens | none
    max_body_bytes = 8388608         # largest request body, after gzip too (413 beyond)
    max_events_per_request = 100000
    max_pending_bytes = 67108864     # request bytes in flight, counted as they arrive (429 beyond); >= max_body_bytes
    flow_dirs = ["flows"]            # reprocess takes flow files from here (default: the served flows' folders)
    allowed_hosts = []               # Host names besides this host, loopback names and IPs ("*": any)
    allowed_origins = []             # web origins that may POST besides the server's own (https://dash.example)
    # tls_cert = "server.pem"        # with tls_key: HTTPS (default: plain HTTP)
    # tls_key = "server.key"

    [limits]                         # load shedding, connections, per-device quotas (docs/guarantees.md)
    max_queue_events = 1000000       # events waiting for the log writer (503 beyond)
    max_queue_wait_ms = 1000         # requests wait longer than this for their answer (503)
    max_memory_bytes = 0             # the server's resident memory (503 beyond); 0: half of this machine's
    max_connections = 4096           # open connections (idle ones are closed first, else 503); <= open files
    header_timeout_s = 10            # a request line and its headers must arrive within this
    body_timeout_s = 30              # a request body must arrive within this (408)
    keep_alive_s = 30                # an idle connection is closed after this
    device_events_per_s = 2000       # per device token (0: no limit): 429 with Retry-After beyond
    device_events_burst = 20000
    device_bytes_per_s = 2097152     # request bytes per second per device token (0: no limit)
    device_bytes_burst = 16777216
    dead_letter_bytes = 1048576      # dead letters kept per device and window; beyond: refused (429), not kept
    dead_letter_window_s = 60
    per_address = false              # auth off: apply the device limits to each client address

    [log]                            # fluvial.config.LogConfig
    partitions = 4                   # of a new log; by default an existing log keeps its own count
    fsync = "batch"                  # batch | interval | never
    fsync_interval_ms = 1000
    segment_bytes = 67108864

    [stream]                         # fluvial.config.StreamConfig, and the lag bound
    batch_interval_ms = 200
    max_batch_records = 250000
    max_lag_records = 5000000        # ingest answers 429 while a speed runner is this far behind
    lease_ms = 10000                 # a silent speed runner keeps its pipeline this long (fencing)

    [batch]
    every_s = 300                    # scheduled batch-layer runs; 0: only on demand
    engine = "local"                 # local | spark
    workers = 2
    spark_master = "local[*]"

    [batch.spark_conf]               # strings; dotted keys are joined back
    spark.executor.memory = "2g"

    [reprocess]
    grace_s = 60                     # how long the old version stays after a switch
    keep_old = false

    [[flows]]
    file = "examples/hashtag_top10.py"   # required
    architecture = "lambda"              # lambda | kappa
    batch_every_s = 300                  # optional, lambda only: overrides [batch].every_s

Errors are :class:`~fluvial.errors.ConfigError` naming the file and the key
(``fluvial.toml: [server].port must be between 0 (any free port) and 65535, got -1``). This
package reads no environment variable (that is :mod:`fluvial.cli`'s job) and
does not expand ``~`` (that would read ``HOME``).

The package: :mod:`~fluvial.settings.model` holds the dataclasses (defaults and
checks of each section) and :func:`with_overrides`, :mod:`~fluvial.settings.load`
reads the file, :mod:`~fluvial.settings.schema` holds its keys and their types,
:mod:`~fluvial.settings.checks` the checks of values and their messages.
"""

from fluvial.settings.checks import is_loopback
from fluvial.settings.load import MAX_CONFIG_BYTES, MAX_DOTS_PER_LINE
from fluvial.settings.model import (
    ARCHITECTURES,
    AUTH_MODES,
    BATCH_ENGINES,
    DEFAULT_CONFIG_FILE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STREAM_SETTINGS,
    BatchSettings,
    FlowSettings,
    LimitsSettings,
    ReprocessSettings,
    ServerSettings,
    Settings,
    with_overrides,
)
from fluvial.settings.schema import SCHEMA

__all__ = [
    "ARCHITECTURES",
    "AUTH_MODES",
    "BATCH_ENGINES",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STREAM_SETTINGS",
    "MAX_CONFIG_BYTES",
    "MAX_DOTS_PER_LINE",
    "BatchSettings",
    "FlowSettings",
    "LimitsSettings",
    "ReprocessSettings",
    "ServerSettings",
    "Settings",
    "is_loopback",
    "with_overrides",
]

_SCHEMA = SCHEMA  # the keys of each section, by their old name (tests compare them with the dataclasses)
