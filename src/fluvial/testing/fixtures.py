"""Readable event fixtures and a seeded random event generator (pure, no I/O)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fluvial.errors import ConfigError
from fluvial.events.envelope import Event

__all__ = ["COLORS", "events_table", "make_events"]

COLORS = ("red", "green", "blue", "amber")
_ENVELOPE = ("device", "kind", "ts", "seq")


def _cell(text: str) -> Any:
    """``12`` -> int, ``2.5`` -> float, ``null`` -> None, ``"12"`` -> str, else the text."""
    if text == "null":
        return None
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def events_table(table: str, *, kind: str = "reading") -> list[Event]:
    """Events from a small Markdown-like table, one row per event, in row order.

    Columns ``device``, ``ts`` (epoch ms) and optionally ``kind`` and ``seq``
    fill the envelope; every other column goes into the payload.  Without a
    ``seq`` column, ``seq`` counts 1, 2, 3, ... per device, in row order (give
    ``seq`` explicitly to write a device retry).  Cells are ints, floats,
    ``null`` or strings (quote a string that looks like a number: ``"12"``).

    Example:
        >>> evs = events_table('''
        ... | device | ts   | value |
        ... | d1     | 1000 | 2.5   |
        ... | d1     | 1500 | 3     |
        ... | d2     | 900  | -1    |
        ... ''')
        >>> [(e.device, e.ts, e.seq, e.payload) for e in evs]  # doctest: +NORMALIZE_WHITESPACE
        [('d1', 1000, 1, {'value': 2.5}), ('d1', 1500, 2, {'value': 3}),
         ('d2', 900, 1, {'value': -1})]
    """
    lines = [ln.strip() for ln in table.strip().splitlines() if ln.strip()]
    rows = []
    for ln in lines:
        if not (ln.startswith("|") and ln.endswith("|")):
            raise ConfigError(f"events_table(): every line must start and end with '|', got {ln!r}")
        cells = [c.strip() for c in ln[1:-1].split("|")]
        if all(set(c) <= set("-: ") for c in cells):
            continue  # a |---|---| separator line
        rows.append(cells)
    if not rows:
        raise ConfigError("events_table(): the table has no header line")
    header, body = rows[0], rows[1:]
    missing = [c for c in ("device", "ts") if c not in header]
    if missing:
        raise ConfigError(f"events_table(): the header {header} lacks column(s) {missing}")
    seqs: dict[str, int] = {}
    events = []
    for n, cells in enumerate(body, start=2):
        if len(cells) != len(header):
            raise ConfigError(f"events_table(): line {n} has {len(cells)} cells, the header has "
                              f"{len(header)}: {cells}")
        row = dict(zip(header, cells))
        device = row["device"]
        ts = _cell(row["ts"])
        if type(ts) is not int:
            raise ConfigError(f"events_table(): line {n}: ts must be an integer (ms), got {row['ts']!r}")
        if "seq" in row:
            seq = int(row["seq"])
            seqs[device] = max(seqs.get(device, 0), seq)
        else:
            seq = seqs[device] = seqs.get(device, 0) + 1
        payload = {k: _cell(v) for k, v in row.items() if k not in _ENVELOPE}
        events.append(Event(device=device, kind=row.get("kind", kind), ts=ts, seq=seq, payload=payload))
    return events


def make_events(seed: int, n: int, *, devices: int | Sequence[str] = 5,
                kinds: Sequence[str] = ("reading",), start_ms: int = 1_700_000_000_000,
                step_ms: int = 100, out_of_order_ms: int = 0, late_fraction: float = 0.0,
                late_by_ms: int = 60_000, duplicate_fraction: float = 0.0) -> list[Event]:
    """``n`` random events (plus retries) in the order a log would receive them.

    Event time advances by ``0..step_ms`` per event from ``start_ms``.  Each
    event's ``ts`` lags that clock by up to ``out_of_order_ms``; with
    probability ``late_fraction`` it lags by up to ``late_by_ms`` more (far
    behind: late for any small allowed lateness).  With probability
    ``duplicate_fraction`` a device retry -- an exact copy of an earlier event,
    same ``(device, seq)`` -- is inserted as well, so the result can hold more
    than ``n`` events; the log stores only the first copy.  Each device
    numbers its events ``seq`` 1, 2, 3, ...

    The payload is ``{"value": float (one decimal), "level": int, "color": str}``.
    Same arguments, same events; prints nothing (the caller prints the seed).

    Example:
        >>> evs = make_events(7, 3, devices=["a", "b"])
        >>> len(evs), sorted({e.device for e in evs}) <= ["a", "b"]
        (3, True)
    """
    if n < 0 or step_ms < 0 or out_of_order_ms < 0 or late_by_ms < 0:
        raise ConfigError("make_events(): n, step_ms, out_of_order_ms and late_by_ms must be >= 0")
    if not (0.0 <= late_fraction <= 1.0 and 0.0 <= duplicate_fraction <= 1.0):
        raise ConfigError("make_events(): late_fraction and duplicate_fraction must be in [0, 1]")
    names = [f"d{i}" for i in range(devices)] if isinstance(devices, int) else list(devices)
    if not names or not kinds:
        raise ConfigError("make_events(): give at least one device and one kind")
    rnd = random.Random(seed)
    clock = start_ms
    seqs = dict.fromkeys(names, 0)
    out: list[Event] = []
    for _ in range(n):
        clock += rnd.randint(0, step_ms)
        device = rnd.choice(names)
        seqs[device] += 1
        ts = clock - rnd.randint(0, out_of_order_ms)
        if late_fraction and rnd.random() < late_fraction:
            ts -= out_of_order_ms + rnd.randint(1, max(1, late_by_ms))
        payload = {"value": rnd.randint(-500, 1500) / 10, "level": rnd.randint(0, 9),
                   "color": rnd.choice(COLORS)}
        out.append(Event(device=device, kind=rnd.choice(list(kinds)), ts=ts, seq=seqs[device],
                         payload=payload))
        if duplicate_fraction and rnd.random() < duplicate_fraction:
            out.append(out[rnd.randrange(len(out))])
    return out
