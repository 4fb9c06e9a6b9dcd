"""The key schema of ``fluvial.toml``: the keys of each section with their types, and the
checks of a table against it (unknown keys, with the key probably meant; wrong types).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from fluvial.settings.checks import fail, show

__all__ = ["SCHEMA", "SECTIONS", "checked", "closest", "home_of", "key_path", "top_level_name"]

_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "table": "a table of strings", "strs": "an array of strings"}
SCHEMA: dict[str, dict[str, str]] = {
    "": {"data_dir": "str", "log_url": "str", "store_url": "str"},
    "server": {"host": "str", "port": "int", "auth": "str", "max_body_bytes": "int",
               "max_events_per_request": "int", "max_pending_bytes": "int", "flow_dirs": "strs",
               "allowed_hosts": "strs", "allowed_origins": "strs", "tls_cert": "str", "tls_key": "str",
               "mqtt": "str", "mqtt_topic": "str"},
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
SECTIONS = ("server", "limits", "log", "stream", "batch", "reprocess")


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The known name ``word`` was probably meant to be (``arch``: ``architecture``)."""
    prefixed = [c for c in choices if len(word) >= 3 and (c.startswith(word) or word.startswith(c))]
    close = prefixed or difflib.get_close_matches(word, choices, n=1)
    return close[0] if close else None


def key_path(where: str, key: str) -> str:
    shown = key if key.replace("_", "").replace("-", "").isalnum() and len(key) <= 60 else repr(key[:60])
    return f"{where}.{shown}" if where else shown


def home_of(key: str) -> str | None:
    """Where a key belongs, for keys written in the wrong table."""
    for section, keys in SCHEMA.items():
        if key in keys:
            return {"": "at the top of the file", "flows": "in [[flows]]"}.get(section, f"in [{section}]")
    return None


def top_level_name(key: str) -> str:
    return "[[flows]]" if key == "flows" else f"[{key}]" if key in SECTIONS else key


def checked(name: str, table: object, where: str, schema: str) -> dict[str, Any]:
    """The keys of ``table`` with their types checked; unknown keys are errors."""
    if not isinstance(table, dict):
        fail(name, f"{where} must be a table, got {show(table)}")
    kinds = SCHEMA[schema]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in kinds:
            hint = closest(key, list(kinds))
            home = home_of(key)
            fail(name, f"unknown key {key_path(where, key)}"
                       + (f"; did you mean {key_path(where, hint)}?" if hint else "")
                       + (f"; {key} belongs {home}" if home and not hint else "")
                       + f" (known keys: {', '.join(kinds)})")
        values[key] = _typed(name, value, key_path(where, key), kinds[key])
    return values


def _typed(name: str, value: object, key: str, kind: str) -> Any:
    if kind == "table":
        return _string_table(name, value, key)
    if kind == "strs" and isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                fail(name, f"{key}[{i}] must be a string, got {show(item)}")
        return tuple(value)
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if ((kind == "int" and type(value) is int) or (kind == "str" and isinstance(value, str))
            or (kind == "bool" and isinstance(value, bool))):
        return value
    fail(name, f"{key} must be {_EXPECTED[kind]}, got {show(value)}")


def _string_table(name: str, value: object, key: str) -> dict[str, str]:
    """A table of strings; nested tables (``spark.executor.memory = ...``) are joined with dots, iteratively."""
    if not isinstance(value, dict):
        fail(name, f"{key} must be {_EXPECTED['table']}, got {show(value)}")
    out: dict[str, str] = {}
    stack: list[tuple[str, dict[str, Any]]] = [("", value)]
    while stack:
        prefix, table = stack.pop()
        for k, v in table.items():
            full = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                stack.append((full, v))
            elif not isinstance(v, str):
                fail(name, f"{key_path(key, full)} must be a string (quote it: \"...\"), got {show(v)}")
            elif full in out:
                fail(name, f"{key_path(key, full)} is given twice")
            else:
                out[full] = v
    return out
