"""The settings as frozen dataclasses, one per section of ``fluvial.toml``, with their
defaults and checks; :func:`with_overrides` applies the command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluvial.config import DEFAULT_DATA_DIR, DEFAULT_LOG, LogConfig, StreamConfig
from fluvial.errors import ConfigError
from fluvial.settings.checks import (
    check_choice,
    check_positive,
    check_seconds,
    check_security,
    existing_file,
    is_loopback,
    require,
)

__all__ = ["ARCHITECTURES", "AUTH_MODES", "BATCH_ENGINES", "DEFAULT_CONFIG_FILE", "DEFAULT_HOST", "DEFAULT_PORT",
           "DEFAULT_STREAM_SETTINGS", "BatchSettings", "FlowSettings", "LimitsSettings", "ReprocessSettings",
           "ServerSettings", "Settings", "with_overrides"]

DEFAULT_CONFIG_FILE = "fluvial.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_STREAM_SETTINGS = StreamConfig(batch_interval_ms=200)
AUTH_MODES = ("auto", "tokens", "none")
BATCH_ENGINES = ("local", "spark")
ARCHITECTURES = ("lambda", "kappa")


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
        mqtt: An MQTT broker to take device events from too
            (``mqtt://[USER[:PASSWORD]@]HOST[:PORT][?client_id=ID]``; :mod:`fluvial.server.mqtt`).
        mqtt_topic: The topic filter devices publish on; its one ``+`` level is the device.

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
    mqtt: str | None = None
    mqtt_topic: str = "devices/+/events"

    def __post_init__(self) -> None:
        require(bool(self.host) and self.host.isprintable() and not any(c.isspace() for c in self.host),
                "host", "an address or a host name", self.host)
        require(0 <= self.port <= 65535, "port", "between 0 (any free port) and 65535", self.port)
        check_choice("auth", self.auth, AUTH_MODES)
        check_positive("max_body_bytes", self.max_body_bytes)
        check_positive("max_events_per_request", self.max_events_per_request)
        check_positive("max_pending_bytes", self.max_pending_bytes)
        require(self.max_pending_bytes >= self.max_body_bytes, "max_pending_bytes",
                f"at least max_body_bytes ({self.max_body_bytes}) so that one body fits", self.max_pending_bytes)
        check_security(self)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need a token: ``auth="auto"`` asks for them unless the host is loopback."""
        return self.auth == "tokens" or (self.auth == "auto" and not is_loopback(self.host))


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
            check_positive(key, getattr(self, key))
        for key in ("max_memory_bytes", "device_bytes_per_s", "device_bytes_burst", "dead_letter_bytes",
                    "device_events_burst"):
            require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        for key in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "dead_letter_window_s"):
            value = getattr(self, key)
            require(math.isfinite(value) and value > 0, key, "a finite number > 0", value)
        check_seconds("device_events_per_s", self.device_events_per_s)


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
        check_seconds("every_s", self.every_s)
        check_choice("engine", self.engine, BATCH_ENGINES)
        check_positive("workers", self.workers)
        require(bool(self.spark_master), "spark_master", "a Spark master URL", self.spark_master)


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
        check_seconds("grace_s", self.grace_s)


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
        check_choice("architecture", self.architecture, ARCHITECTURES)
        if self.batch_every_s is not None:
            check_seconds("batch_every_s", self.batch_every_s)
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
        check_positive("max_lag_records", self.max_lag_records)
        from fluvial.backends import check_log_url, check_store_url

        if self.log_url is not None:
            check_log_url(self.log_url)
        if self.store_url is not None:
            check_store_url(self.store_url)
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
        from fluvial.settings.load import parse, read_toml  # it builds these dataclasses

        if path is None:
            if not Path(DEFAULT_CONFIG_FILE).exists():
                return cls(data_dir=Path(DEFAULT_DATA_DIR).absolute())
            path = DEFAULT_CONFIG_FILE
        return parse(read_toml(Path(path)), name=os.fspath(path), base=Path(path).absolute().parent,
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
            file = existing_file(Path(given).absolute(), f"flow file {os.fspath(given)!r}")
            chosen.append(configured.get(file, FlowSettings(file=file)))
        changes["flows"] = tuple(chosen)
    return dataclasses.replace(settings, **changes)
