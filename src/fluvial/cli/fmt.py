"""Output helpers of the CLI: times, JSON and aligned tables."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from fluvial.errors import ConfigError
from fluvial.ingest.files import parse_time_ms

__all__ = ["iso", "json_arg", "table", "time_arg", "to_json"]


def _fallback(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return str(obj)


_enc = msgspec.json.Encoder(enc_hook=_fallback)


def to_json(value: Any) -> str:
    """Compact JSON; values JSON cannot hold are written as their ``str()``."""
    return _enc.encode(value).decode()


def iso(ts_ms: int | None) -> str:
    """``1452081600000`` -> ``2016-01-06T12:00:00Z`` (milliseconds only when not zero)."""
    if ts_ms is None:
        return "-"
    try:
        dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if ts_ms % 1000:
        text += f".{ts_ms % 1000:03d}"
    return text + "Z"


def time_arg(text: str) -> int:
    """argparse type: epoch ms or ISO-8601 -> epoch ms (bad input is a usage error)."""
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"(?:(\d{1,12})(ms|[smhdw]))+", re.ASCII)
_DURATION_PART = re.compile(r"(\d{1,12})(ms|[smhdw])", re.ASCII)


def duration_ms(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s``, ``250ms``, ``2w`` or a sum such as ``1d12h``, in
    milliseconds (callers check the bounds they need).

    Example:
        >>> duration_ms("30d"), duration_ms("1h30m"), duration_ms("1s250ms")
        (2592000000, 5400000, 1250)
    """
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise ConfigError(f"{text!r} is not a duration: write a number and a unit, ms s m h d w "
                          "(e.g. 30d, 12h, 1d12h, 10m)")
    return sum(int(n) * _UNITS_MS[unit] for n, unit in _DURATION_PART.findall(compact))


def count_arg(text: str) -> int:
    """argparse type of a count: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def json_arg(text: str) -> Any:
    """argparse type: strict JSON if it parses, else the string itself (``NaN``, ``Infinity``
    and ``1e400`` are the strings they spell: no view key is a NaN or an infinity)."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return text
    return text if isinstance(value, float) and not math.isfinite(value) else value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def cell(value: Any) -> str:
    """How a value looks in a table cell: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else to_json(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          right: Sequence[str] = ()) -> str:
    """Aligned columns; the columns named in ``right`` are right-aligned (numbers)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if h in right else v.ljust(w)
                 for v, w, h in zip(values, widths, headers)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])
