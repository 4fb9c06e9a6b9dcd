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
module reads no environment variable (that is :mod:`fluvial.cli`'s job) and
does not expand ``~`` (that would read ``HOME``).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from fluvial.config import DEFAULT_DATA_DIR, DEFAULT_LOG, LogConfig, StreamConfig
from fluvial.errors import ConfigError

DEFAULT_CONFIG_FILE = "fluvial.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_STREAM_SETTINGS = StreamConfig(batch_interval_ms=200)
MAX_CONFIG_BYTES = 256 * 1024
MAX_DOTS_PER_LINE = 64  # tomllib takes quadratic time in the depth of a dotted key
AUTH_MODES = ("auto", "tokens", "none")
BATCH_ENGINES = ("local", "spark")
ARCHITECTURES = ("lambda", "kappa")


def _show(value: object) -> str:
    """``value`` for a message: its kind, and its repr when short (never a deep repr)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)"
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}.get(type(value), "a date/time")
    text = repr(value)
    return f"{text[:60]}... ({kind})" if len(text) > 64 else f"{text} ({kind})"


def _require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {_show(got)}")


def _check_positive(key: str, value: int) -> None:
    _require(value > 0, key, "> 0", value)


def _check_seconds(key: str, value: float) -> None:
    _require(math.isfinite(value) and value >= 0, key, "a finite number >= 0", value)


def _check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    _require(value in allowed, key, "one of " + ", ".join(allowed), value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, ``127.0.0.0/8``, ``::1``).

    Example:
        >>> is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """The HTTP server.

    Attributes:
        host: Address to listen on.
        port: TCP port to listen on.
        auth: ``auto`` (tokens unless ``host`` is a loopback address), ``tokens`` or ``none``.
        max_body_bytes: Largest request body, after gzip decompression too (413 beyond).
        max_events_per_request: Most events in one ingest request.
        max_pending_bytes: Request body bytes in flight: reserved from ``Content-Length`` (or counted
            chunk by chunk) before they are read, held until the request is answered (429 beyond).
            At least ``max_body_bytes``, so that any one body fits.
        flow_dirs: The directories ``POST /v1/views/NAME/reprocess`` may take a flow file
            from (besides the served flow files); None: the folders of the served flows.
        allowed_hosts: ``Host`` names accepted besides IP addresses, loopback names, ``host``
            and this machine's name (``.example.com`` also takes its subdomains, ``*`` any name).
        allowed_origins: Web origins (``https://dash.example.com``) whose pages may send
            POST requests, besides the server's own.
        tls_cert: PEM certificate (chain) to serve HTTPS with; requires ``tls_key``.
        tls_key: PEM private key of ``tls_cert`` (not encrypted).

    Example:
        >>> ServerSettings(host="0.0.0.0").auth_enabled, ServerSettings().auth_enabled
        (True, False)
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth: str = "auto"
    max_body_bytes: int = 8 * 1024 * 1024
    max_events_per_request: int = 100_000
    max_pending_bytes: int = 64 * 1024 * 1024
    flow_dirs: tuple[Path, ...] | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        _require(bool(self.host) and self.host.isprintable() and not any(c.isspace() for c in self.host),
                 "host", "an address or a host name", self.host)
        _require(0 <= self.port <= 65535, "port", "between 0 (any free port) and 65535", self.port)
        _check_choice("auth", self.auth, AUTH_MODES)
        _check_positive("max_body_bytes", self.max_body_bytes)
        _check_positive("max_events_per_request", self.max_events_per_request)
        _check_positive("max_pending_bytes", self.max_pending_bytes)
        _require(self.max_pending_bytes >= self.max_body_bytes, "max_pending_bytes",
                 f"at least max_body_bytes ({self.max_body_bytes}) so that one body fits", self.max_pending_bytes)
        _check_security(self)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need a token: ``auth="auto"`` asks for them unless the host is loopback."""
        return self.auth == "tokens" or (self.auth == "auto" and not is_loopback(self.host))


_HOST_NAME = re.compile(r"\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", re.ASCII)
_ORIGIN = re.compile(r"https?://([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", re.ASCII)


def _is_host_pattern(value: str) -> bool:
    """``*``, a host name (``.example.com``: and its subdomains) or an IP address, without a port."""
    if value == "*" or _HOST_NAME.fullmatch(value):
        return True
    try:
        ipaddress.ip_address(value.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def _is_origin(value: str) -> bool:
    """``scheme://host[:port]`` as browsers send it in ``Origin`` (no path, no trailing slash)."""
    match = _ORIGIN.fullmatch(value)
    return match is not None and (match.group(3) is None or 0 < int(match.group(3)[1:]) <= 65535)


def _check_security(server: ServerSettings) -> None:
    """The flow directories, Host names, origins and TLS files of ``[server]``."""
    for i, folder in enumerate(server.flow_dirs or ()):
        _require(isinstance(folder, Path) and folder.is_dir(), f"flow_dirs[{i}]", "an existing directory",
                 os.fspath(folder))
    for i, host in enumerate(server.allowed_hosts):
        _require(isinstance(host, str) and _is_host_pattern(host), f"allowed_hosts[{i}]",
                 'a host name without port (fluvial.example.com, .example.com for its subdomains, "*")', host)
    for i, origin in enumerate(server.allowed_origins):
        _require(isinstance(origin, str) and _is_origin(origin), f"allowed_origins[{i}]",
                 "an origin as browsers send it: scheme://host[:port], no path (https://dash.example.com)", origin)
    if (server.tls_cert is None) != (server.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if server.tls_key is None else ("tls_key", "tls_cert")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both the certificate "
                          "(tls_cert) and its private key (tls_key)")


@dataclass(frozen=True, kw_only=True)
class LimitsSettings:
    """What ``fluvial serve`` takes before it sheds load (:mod:`fluvial.server.limits`).

    Attributes:
        max_queue_events: Events waiting for the log writer; beyond, ingest answers 503.
        max_queue_wait_ms: Ingest answers 503 once requests have waited longer than this for
            their answer for a quarter of a second (the oldest request whose body is read, plus the
            event loop's lag).
        max_memory_bytes: Ingest answers 503 while the server's resident memory is above this;
            0: half of this machine's memory.
        max_connections: Open HTTP connections; a new one beyond closes the longest-idle one,
            else gets 503. Kept below the open-file limit.
        header_timeout_s: A request line and its headers must arrive within this, else the
            connection is closed.
        body_timeout_s: A request body must arrive within this (408, connection closed).
        keep_alive_s: An idle connection is closed after this.
        device_events_per_s: Events per second per device token (token bucket; 0: no limit).
        device_events_burst: Events a device may send at once above its rate.
        device_bytes_per_s: Request bytes per second per device token (0: no limit).
        device_bytes_burst: Bytes a device may send at once above its rate.
        dead_letter_bytes: Dead-letter bytes kept per device and window; beyond, a bad body is
            refused (429) and counted, not kept (0: no quota).
        dead_letter_window_s: The window of ``dead_letter_bytes``.
        per_address: With auth off, apply the device limits to each client address.

    Example:
        >>> LimitsSettings().max_connections, LimitsSettings(max_connections=64).header_timeout_s
        (4096, 10.0)
    """

    max_queue_events: int = 1_000_000
    max_queue_wait_ms: int = 1_000
    max_memory_bytes: int = 0
    max_connections: int = 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 30.0
    device_events_per_s: float = 2_000.0
    device_events_burst: int = 20_000
    device_bytes_per_s: int = 2 * 1024 * 1024
    device_bytes_burst: int = 16 * 1024 * 1024
    dead_letter_bytes: int = 1024 * 1024
    dead_letter_window_s: float = 60.0
    per_address: bool = False

    def __post_init__(self) -> None:
        for key in ("max_queue_events", "max_queue_wait_ms", "max_connections"):
            _check_positive(key, getattr(self, key))
        for key in ("max_memory_bytes", "device_bytes_per_s", "device_bytes_burst", "dead_letter_bytes",
                    "device_events_burst"):
            _require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        for key in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "dead_letter_window_s"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value > 0, key, "a finite number > 0", value)
        _check_seconds("device_events_per_s", self.device_events_per_s)


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    """The batch layer.

    Attributes:
        every_s: Seconds between scheduled batch runs; 0: only on demand.
        engine: ``local`` or ``spark``.
        workers: Processes of the local batch runner.
        spark_master: Master URL of the Spark runner.
        spark_conf: Spark settings passed through as they are (``spark.executor.memory``).
    """

    every_s: float = 300.0
    engine: str = "local"
    workers: int = 2
    spark_master: str = "local[*]"
    spark_conf: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_seconds("every_s", self.every_s)
        _check_choice("engine", self.engine, BATCH_ENGINES)
        _check_positive("workers", self.workers)
        _require(bool(self.spark_master), "spark_master", "a Spark master URL", self.spark_master)


@dataclass(frozen=True, kw_only=True)
class ReprocessSettings:
    """Kappa reprocessing.

    Attributes:
        grace_s: Seconds the old version of a view stays after a switch.
        keep_old: Keep the old version after the grace period instead of dropping it.
    """

    grace_s: float = 60.0
    keep_old: bool = False

    def __post_init__(self) -> None:
        _check_seconds("grace_s", self.grace_s)


@dataclass(frozen=True, kw_only=True)
class FlowSettings:
    """A flow to serve.

    Attributes:
        file: The Python file defining the flow.
        architecture: ``lambda`` (batch and speed layers) or ``kappa`` (stream only, reprocessing).
        batch_every_s: Lambda only: overrides ``BatchSettings.every_s`` for this flow.
    """

    file: Path
    architecture: str = "lambda"
    batch_every_s: float | None = None

    def __post_init__(self) -> None:
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        if self.batch_every_s is not None:
            _check_seconds("batch_every_s", self.batch_every_s)
            if self.architecture != "lambda":
                raise ConfigError(f"batch_every_s applies to lambda flows only (a {self.architecture} "
                                  f"flow has no batch layer): remove it or set architecture = \"lambda\"")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything ``fluvial serve`` needs; :meth:`load` reads it from ``fluvial.toml``.

    Attributes:
        data_dir: The data directory (log, dead letters, schemas, views).
        log_url: Where the log is, if not in ``data_dir`` (see :mod:`fluvial.backends`).
        store_url: Where the view store is, if not in ``data_dir``.
        server: The HTTP server.
        limits: Load shedding, connection limits and per-device quotas.
        log: The embedded log.
        stream: Micro-batching of the speed layer.
        max_lag_records: Ingest answers 429 while a speed-layer runner is this far behind the log.
        batch: The batch layer.
        reprocess: Kappa reprocessing.
        flows: The flows to serve, one per file.
        source: The file these settings came from (``None``: defaults only).
    """

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    log_url: str | None = None
    store_url: str | None = None
    server: ServerSettings = ServerSettings()
    limits: LimitsSettings = LimitsSettings()
    log: LogConfig = DEFAULT_LOG
    stream: StreamConfig = DEFAULT_STREAM_SETTINGS
    max_lag_records: int = 5_000_000
    batch: BatchSettings = BatchSettings()
    reprocess: ReprocessSettings = ReprocessSettings()
    flows: tuple[FlowSettings, ...] = ()
    source: Path | None = None

    def __post_init__(self) -> None:
        _check_positive("max_lag_records", self.max_lag_records)
        from fluvial.backends import log_path, store_path

        if self.log_url is not None:
            log_path(self.log_url)
        if self.store_url is not None:
            store_path(self.store_url)
        seen: set[Path] = set()
        for flow in self.flows:
            if flow.file in seen:
                raise ConfigError(f"flow file {flow.file} is listed twice; list each flow file once")
            seen.add(flow.file)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Settings:
        """Reads a config file.

        Args:
            path: The file; ``None``: ``./fluvial.toml`` if it exists, else the defaults.

        Raises:
            ConfigError: The file does not exist, is not TOML, or has a wrong setting.
        """
        if path is None:
            if not Path(DEFAULT_CONFIG_FILE).exists():
                return cls(data_dir=Path(DEFAULT_DATA_DIR).absolute())
            path = DEFAULT_CONFIG_FILE
        return _parse(_read_toml(Path(path)), name=os.fspath(path), base=Path(path).absolute().parent,
                      source=Path(path).absolute())

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def with_overrides(settings: Settings, *, host: str | None = None, port: int | None = None,
                   data_dir: str | os.PathLike[str] | None = None,
                   flows: Sequence[str | os.PathLike[str]] | None = None, auth: str | None = None,
                   log_url: str | None = None, store_url: str | None = None) -> Settings:
    """``settings`` with the command-line flags applied; ``None`` keeps a setting.

    Relative paths are resolved against the current directory. ``flows`` replaces
    the configured flows; a file that the config also lists keeps its settings
    there (architecture, batch_every_s), any other is a lambda flow.

    Raises:
        ConfigError: A value is out of range or a flow file does not exist.
    """
    server = settings.server
    if host is not None or port is not None or auth is not None:
        server = dataclasses.replace(server, host=server.host if host is None else host,
                                     port=server.port if port is None else port,
                                     auth=server.auth if auth is None else auth)
    changes: dict[str, Any] = {"server": server}
    if data_dir is not None:
        changes["data_dir"] = Path(data_dir).absolute()
    if log_url is not None:
        changes["log_url"] = log_url
    if store_url is not None:
        changes["store_url"] = store_url
    if flows is not None:
        configured = {flow.file: flow for flow in settings.flows}
        chosen: list[FlowSettings] = []
        for given in flows:
            file = _existing_file(Path(given).absolute(), f"flow file {os.fspath(given)!r}")
            chosen.append(configured.get(file, FlowSettings(file=file)))
        changes["flows"] = tuple(chosen)
    return dataclasses.replace(settings, **changes)


# Reading the file ---------------------------------------------------------------------------------

_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "table": "a table of strings", "strs": "an array of strings"}
_SCHEMA: dict[str, dict[str, str]] = {
    "": {"data_dir": "str", "log_url": "str", "store_url": "str"},
    "server": {"host": "str", "port": "int", "auth": "str", "max_body_bytes": "int",
               "max_events_per_request": "int", "max_pending_bytes": "int", "flow_dirs": "strs",
               "allowed_hosts": "strs", "allowed_origins": "strs", "tls_cert": "str", "tls_key": "str"},
    "limits": {"max_queue_events": "int", "max_queue_wait_ms": "int", "max_memory_bytes": "int",
               "max_connections": "int", "header_timeout_s": "float", "body_timeout_s": "float",
               "keep_alive_s": "float", "device_events_per_s": "float", "device_events_burst": "int",
               "device_bytes_per_s": "int", "device_bytes_burst": "int", "dead_letter_bytes": "int",
               "dead_letter_window_s": "float", "per_address": "bool"},
    "log": {"partitions": "int", "fsync": "str", "fsync_interval_ms": "int", "segment_bytes": "int"},
    "stream": {"batch_interval_ms": "int", "max_batch_records": "int", "max_lag_records": "int",
               "lease_ms": "int"},
    "batch": {"every_s": "float", "engine": "str", "workers": "int", "spark_master": "str", "spark_conf": "table"},
    "reprocess": {"grace_s": "float", "keep_old": "bool"},
    "flows": {"file": "str", "architecture": "str", "batch_every_s": "float"},
}
_SECTIONS = ("server", "limits", "log", "stream", "batch", "reprocess")


def _read_toml(path: Path) -> dict[str, Any]:
    name = os.fspath(path)
    if not path.exists():
        raise ConfigError(f"{name}: no such config file (without --config, ./{DEFAULT_CONFIG_FILE} is "
                          f"read if it exists, else the defaults apply)")
    if not path.is_file():  # a directory, a FIFO that would block, /dev/zero ...
        raise ConfigError(f"{name}: not a regular file; give the path of a {DEFAULT_CONFIG_FILE}")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: larger than {MAX_CONFIG_BYTES} bytes; is it really a {DEFAULT_CONFIG_FILE}?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name}: not UTF-8 text (byte {raw[exc.start]:#04x} at line {line}); "
                          f"save it as UTF-8") from None
    _check_nesting(name, text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{name}: not valid TOML: arrays or inline tables nested too deeply") from None


def _check_nesting(name: str, text: str) -> None:
    """Refuses keys nested deeper than any setting before tomllib spends minutes on them.

    A dotted key or a table header stays on one line, so counting the dots of
    each line bounds the depth (comment lines are skipped, strings are not).
    """
    if text.count(".") <= MAX_DOTS_PER_LINE:
        return
    for number, line in enumerate(text.split("\n"), start=1):
        dots = line.count(".")
        if dots > MAX_DOTS_PER_LINE and not line.lstrip().startswith("#"):
            _fail(name, f"line {number} has {dots} dots, more than {MAX_DOTS_PER_LINE}: no setting is nested "
                        f"that deep (if they are in a string, split it)")


def _closest(word: str, choices: Sequence[str]) -> str | None:
    """The known name ``word`` was probably meant to be (``arch``: ``architecture``)."""
    prefixed = [c for c in choices if len(word) >= 3 and (c.startswith(word) or word.startswith(c))]
    close = prefixed or difflib.get_close_matches(word, choices, n=1)
    return close[0] if close else None


def _fail(name: str, message: str) -> NoReturn:
    raise ConfigError(f"{name}: {message}")


@contextmanager
def _at(prefix: str, found: Mapping[str, object] | None = None) -> Iterator[None]:
    """Prefixes the ConfigErrors of the dataclasses (``port must be ...``) with file and section.

    ``found``: the values of the section, shown when the message does not say
    what it got (the checks of LogConfig and StreamConfig test two keys at once).
    """
    try:
        yield
    except ConfigError as exc:
        message = f"{prefix}{exc}"
        if found and ", got " not in message:
            message += "; found " + ", ".join(f"{k} = {v!r}" for k, v in found.items())
        raise ConfigError(message) from None


def _key(where: str, key: str) -> str:
    shown = key if key.replace("_", "").replace("-", "").isalnum() and len(key) <= 60 else repr(key[:60])
    return f"{where}.{shown}" if where else shown


def _home_of(key: str) -> str | None:
    """Where a key belongs, for keys written in the wrong table."""
    for section, keys in _SCHEMA.items():
        if key in keys:
            return {"": "at the top of the file", "flows": "in [[flows]]"}.get(section, f"in [{section}]")
    return None


def _top_level_name(key: str) -> str:
    return "[[flows]]" if key == "flows" else f"[{key}]" if key in _SECTIONS else key


def _checked(name: str, table: object, where: str, schema: str) -> dict[str, Any]:
    """The keys of ``table`` with their types checked; unknown keys are errors."""
    if not isinstance(table, dict):
        _fail(name, f"{where} must be a table, got {_show(table)}")
    kinds = _SCHEMA[schema]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in kinds:
            hint = _closest(key, list(kinds))
            home = _home_of(key)
            _fail(name, f"unknown key {_key(where, key)}"
                        + (f"; did you mean {_key(where, hint)}?" if hint else "")
                        + (f"; {key} belongs {home}" if home and not hint else "")
                        + f" (known keys: {', '.join(kinds)})")
        values[key] = _typed(name, value, _key(where, key), kinds[key])
    return values


def _typed(name: str, value: object, key: str, kind: str) -> Any:
    if kind == "table":
        return _string_table(name, value, key)
    if kind == "strs" and isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                _fail(name, f"{key}[{i}] must be a string, got {_show(item)}")
        return tuple(value)
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if ((kind == "int" and type(value) is int) or (kind == "str" and isinstance(value, str))
            or (kind == "bool" and isinstance(value, bool))):
        return value
    _fail(name, f"{key} must be {_EXPECTED[kind]}, got {_show(value)}")


def _string_table(name: str, value: object, key: str) -> dict[str, str]:
    """A table of strings; nested tables (``spark.executor.memory = ...``) are joined with dots, iteratively."""
    if not isinstance(value, dict):
        _fail(name, f"{key} must be {_EXPECTED['table']}, got {_show(value)}")
    out: dict[str, str] = {}
    stack: list[tuple[str, dict[str, Any]]] = [("", value)]
    while stack:
        prefix, table = stack.pop()
        for k, v in table.items():
            full = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                stack.append((full, v))
            elif not isinstance(v, str):
                _fail(name, f"{_key(key, full)} must be a string (quote it: \"...\"), got {_show(v)}")
            elif full in out:
                _fail(name, f"{_key(key, full)} is given twice")
            else:
                out[full] = v
    return out


def _path(name: str, value: str, key: str, base: Path) -> Path:
    if not value or not value.isprintable():
        _fail(name, f"{key} must be a path, got {_show(value)}")
    if value.startswith("~"):
        _fail(name, f"{key} must not start with ~ (it is not expanded), got {_show(value)}; write the full "
                    f"path or one relative to the folder of {name}")
    return base / value


def _existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} does not exist (looked for {path})")
    if not path.is_file():
        raise ConfigError(f"{what} is not a file ({path})")
    return path.resolve()


def _parse(data: dict[str, Any], *, name: str, base: Path, source: Path) -> Settings:
    for key, value in data.items():
        if key not in _SECTIONS and key != "flows" and key not in _SCHEMA[""]:
            known = [*_SCHEMA[""], *_SECTIONS, "flows"]
            hint = _closest(key, known)
            home = _home_of(key)
            what = f"section [{key[:60]}]" if isinstance(value, dict) else f"key {_key('', key)}"
            _fail(name, f"unknown {what}"
                        + (f"; did you mean {_top_level_name(hint)}?" if hint else "")
                        + (f"; {key} belongs {home}" if home and not hint else "")
                        + f" (known: {', '.join(map(_top_level_name, known))})")
    top = _checked(name, {k: v for k, v in data.items() if k in _SCHEMA[""]}, "", "")
    sections = {s: _checked(name, data.get(s, {}), f"[{s}]", s) for s in _SECTIONS}
    stream = sections["stream"]
    max_lag_records = stream.pop("max_lag_records", Settings.max_lag_records)
    with _at(f"{name}: [server]."):
        server = ServerSettings(**_server_paths(name, sections["server"], base))
    with _at(f"{name}: [limits]."):
        limits = LimitsSettings(**sections["limits"])
    with _at(f"{name}: [log].", sections["log"]):
        log = LogConfig(**sections["log"])
    with _at(f"{name}: [stream].", stream):
        _check_positive("max_lag_records", max_lag_records)
        stream_config = dataclasses.replace(DEFAULT_STREAM_SETTINGS, **stream)
    with _at(f"{name}: [batch]."):
        batch = BatchSettings(**sections["batch"])
    with _at(f"{name}: [reprocess]."):
        reprocess = ReprocessSettings(**sections["reprocess"])
    data_dir = _path(name, top["data_dir"], "data_dir", base) if "data_dir" in top else base / DEFAULT_DATA_DIR
    with _at(f"{name}: "):
        urls = {key: top[key] for key in ("log_url", "store_url") if key in top}
        Settings(**urls)   # a malformed URL fails here, naming the file
    return Settings(data_dir=data_dir, **urls, server=server, limits=limits, log=log, stream=stream_config,
                    max_lag_records=max_lag_records, batch=batch, reprocess=reprocess,
                    flows=_flows(name, data.get("flows", []), base), source=source)


def _server_paths(name: str, values: dict[str, Any], base: Path) -> dict[str, Any]:
    """``[server]`` with its paths (flow_dirs, tls_cert, tls_key) relative to the config folder."""
    out = dict(values)
    if "flow_dirs" in out:
        out["flow_dirs"] = tuple(_path(name, d, f"[server].flow_dirs[{i}]", base).resolve()
                                 for i, d in enumerate(out["flow_dirs"]))
    for key in ("tls_cert", "tls_key"):
        if key in out:
            out[key] = _path(name, out[key], f"[server].{key}", base)
    return out


def _flows(name: str, entries: object, base: Path) -> tuple[FlowSettings, ...]:
    if not isinstance(entries, list):
        _fail(name, f"flows must be an array of tables ([[flows]] entries), got {_show(entries)}")
    flows: list[FlowSettings] = []
    first_index: dict[Path, int] = {}
    for i, entry in enumerate(entries):
        where = f"flows[{i}]"
        values = _checked(name, entry, where, "flows")
        if "file" not in values:
            _fail(name, f"{where} has no file; every [[flows]] entry needs file = \"path/to/flow.py\"")
        path = _path(name, values.pop("file"), f"{where}.file", base)
        with _at(f"{name}: "):
            file = _existing_file(path, f"{where}.file")
        if file in first_index:
            _fail(name, f"{where}.file names the same file as flows[{first_index[file]}].file ({file}); "
                        f"list each flow file once")
        first_index[file] = i
        with _at(f"{name}: {where}."):
            flows.append(FlowSettings(file=file, **values))
    return tuple(flows)
