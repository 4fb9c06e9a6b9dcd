"""Reading ``fluvial.toml``: the file (size, encoding, TOML, nesting), then its tables
checked against the key schema and turned into :class:`~fluvial.settings.Settings`,
every error prefixed with the file and the section.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluvial.config import DEFAULT_DATA_DIR, LogConfig
from fluvial.errors import ConfigError
from fluvial.settings.checks import check_positive, existing_file, fail, show
from fluvial.settings.model import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_STREAM_SETTINGS,
    BatchSettings,
    FlowSettings,
    LimitsSettings,
    ReprocessSettings,
    ServerSettings,
    Settings,
)
from fluvial.settings.schema import SCHEMA, SECTIONS, checked, closest, home_of, key_path, top_level_name

__all__ = ["MAX_CONFIG_BYTES", "MAX_DOTS_PER_LINE", "parse", "read_toml"]

MAX_CONFIG_BYTES = 256 * 1024
MAX_DOTS_PER_LINE = 64  # tomllib takes quadratic time in the depth of a dotted key


def read_toml(path: Path) -> dict[str, Any]:
    """The table of the config file at ``path``.

    Raises:
        ConfigError: The file does not exist, is not a regular file, is too large, is not
            UTF-8, nests keys too deeply, or is not TOML.
    """
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
            fail(name, f"line {number} has {dots} dots, more than {MAX_DOTS_PER_LINE}: no setting is nested "
                       f"that deep (if they are in a string, split it)")


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


def _path(name: str, value: str, key: str, base: Path) -> Path:
    if not value or not value.isprintable():
        fail(name, f"{key} must be a path, got {show(value)}")
    if value.startswith("~"):
        fail(name, f"{key} must not start with ~ (it is not expanded), got {show(value)}; write the full "
                   f"path or one relative to the folder of {name}")
    return base / value


def parse(data: dict[str, Any], *, name: str, base: Path, source: Path) -> Settings:
    """The settings of a config file's table ``data``: ``name`` is the file as messages show it,
    ``base`` the folder relative paths start from, ``source`` the file.

    Raises:
        ConfigError: An unknown key or section, a value of the wrong type or out of range.
    """
    for key, value in data.items():
        if key not in SECTIONS and key != "flows" and key not in SCHEMA[""]:
            known = [*SCHEMA[""], *SECTIONS, "flows"]
            hint = closest(key, known)
            home = home_of(key)
            what = f"section [{key[:60]}]" if isinstance(value, dict) else f"key {key_path('', key)}"
            fail(name, f"unknown {what}"
                       + (f"; did you mean {top_level_name(hint)}?" if hint else "")
                       + (f"; {key} belongs {home}" if home and not hint else "")
                       + f" (known: {', '.join(map(top_level_name, known))})")
    top = checked(name, {k: v for k, v in data.items() if k in SCHEMA[""]}, "", "")
    sections = {s: checked(name, data.get(s, {}), f"[{s}]", s) for s in SECTIONS}
    stream = sections["stream"]
    max_lag_records = stream.pop("max_lag_records", Settings.max_lag_records)
    with _at(f"{name}: [server]."):
        server = ServerSettings(**_server_paths(name, sections["server"], base))
    with _at(f"{name}: [limits]."):
        limits = LimitsSettings(**sections["limits"])
    with _at(f"{name}: [log].", sections["log"]):
        log = LogConfig(**sections["log"])
    with _at(f"{name}: [stream].", stream):
        check_positive("max_lag_records", max_lag_records)
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
        fail(name, f"flows must be an array of tables ([[flows]] entries), got {show(entries)}")
    flows: list[FlowSettings] = []
    first_index: dict[Path, int] = {}
    for i, entry in enumerate(entries):
        where = f"flows[{i}]"
        values = checked(name, entry, where, "flows")
        if "file" not in values:
            fail(name, f"{where} has no file; every [[flows]] entry needs file = \"path/to/flow.py\"")
        path = _path(name, values.pop("file"), f"{where}.file", base)
        with _at(f"{name}: "):
            file = existing_file(path, f"{where}.file")
        if file in first_index:
            fail(name, f"{where}.file names the same file as flows[{first_index[file]}].file ({file}); "
                       f"list each flow file once")
        first_index[file] = i
        with _at(f"{name}: {where}."):
            flows.append(FlowSettings(file=file, **values))
    return tuple(flows)
