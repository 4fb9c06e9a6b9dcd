"""``fluvial log stats|tail|dead-letters``: look into the event log and the dead-letter log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from fluvial.cli.app import arg, existing_data_dir, subcommand
from fluvial.cli.fmt import iso, table, to_json

RAW_SHOWN = 60


def _open_log(path: Path) -> Any:
    """The log, readonly; None when nothing was ever ingested."""
    from fluvial.log import LocalLog

    if not (path / "log" / "meta.json").exists():
        return None
    return LocalLog.open(path / "log", readonly=True)


def _open_dead_letters(path: Path) -> Any:
    from fluvial.log import DeadLetterLog

    if not (path / "dead-letters" / "p-0000").exists():
        return None
    return DeadLetterLog.open(path / "dead-letters", readonly=True)


def _dead_count(path: Path) -> int:
    dead = _open_dead_letters(path)
    if dead is None:
        return 0
    try:
        return int(dead.count())
    finally:
        dead.close()


@subcommand(
    "log stats",
    summary="records, offsets and event-time range of each partition",
    description="Per partition of the event log: records, offsets [start, end), event-time "
                "range (ISO, UTC) and bytes on disk; then the totals and the number of "
                "dead letters.",
    example="fluvial log stats",
)
def stats(args: argparse.Namespace) -> int:
    path = existing_data_dir(args)
    log = _open_log(path)
    parts = [] if log is None else log.stats()
    if log is not None:
        log.close()
    rows = [[str(s.partition), str(s.records), f"[{s.start_offset}, {s.end_offset})",
             iso(s.min_ts), iso(s.max_ts), str(s.bytes)] for s in parts]
    known = [s for s in parts if s.min_ts is not None]
    rows.append(["total", str(sum(s.records for s in parts)), "",
                 iso(min(s.min_ts for s in known)) if known else "-",
                 iso(max(s.max_ts for s in known)) if known else "-",
                 str(sum(s.bytes for s in parts))])
    print(table(["PARTITION", "RECORDS", "OFFSETS", "FIRST EVENT TIME", "LAST EVENT TIME",
                 "BYTES"], rows, right=["RECORDS", "BYTES"]))
    print(f"dead letters: {_dead_count(path)}")
    return 0


def _tail(log: Any, n: int, kind: str | None) -> list[tuple[int, int, int, Any]]:
    """The last ``n`` events (of ``kind``) as (append_ms, partition, offset, event)."""
    found: list[tuple[int, int, int, Any]] = []
    for p, (start, end) in enumerate(zip(log.start_offsets(), log.end_offsets())):
        picked: list[tuple[int, int, int, Any]] = []
        stop, window = end, max(n, 1)
        while stop > start and len(picked) < n:  # read backwards until n matches
            lo = max(start, stop - window)
            batch = log.read(p, lo, stop_offset=stop, max_records=stop - lo)
            got = [(ms, p, lo + i, ev) for i, (ev, ms) in enumerate(zip(batch.events, batch.append_ms))
                   if kind is None or ev.kind == kind]
            picked = got + picked
            stop, window = lo, min(window * 2, 1 << 20)
        found.extend(picked[-n:] if n else [])
    found.sort(key=lambda t: (t[0], t[1], t[2]))
    return found[-n:] if n else []


@subcommand(
    "log tail",
    summary="the last events appended, across partitions",
    description="Print the last N events of the log, across partitions, in append order "
                "(append time, then partition and offset).",
    example="fluvial log tail -n 20 --kind reading --format jsonl",
    args=[
        arg("-n", type=int, default=10, metavar="N", help="how many events (default: %(default)s)"),
        arg("--kind", metavar="K", help="only events of this kind"),
        arg("--format", choices=("table", "jsonl"), default="table",
            help="table, or jsonl: one event envelope per line (default: %(default)s)"),
    ],
)
def tail(args: argparse.Namespace) -> int:
    log = _open_log(existing_data_dir(args))
    if log is None:
        print("(the log is empty: nothing was ingested yet)")
        return 0
    try:
        events = _tail(log, max(args.n, 0), args.kind)
    finally:
        log.close()
    if args.format == "jsonl":
        for _, _, _, ev in events:
            print(to_json(ev))
        return 0
    rows = [[f"{p}:{o}", iso(ev.ts), ev.device, ev.kind, str(ev.seq), to_json(ev.payload)]
            for _, p, o, ev in events]
    print(table(["POSITION", "TS", "DEVICE", "KIND", "SEQ", "PAYLOAD"], rows, right=["SEQ"]))
    return 0


@subcommand(
    "log dead-letters",
    summary="the last inputs refused by ingest, with the reason",
    description="Print the last N dead letters: when, source, line, the reason it was refused "
                f"and the first {RAW_SHOWN} bytes of the raw input (escaped).",
    example="fluvial log dead-letters -n 50",
    args=[
        arg("-n", type=int, default=20, metavar="N", help="how many (default: %(default)s)"),
        arg("--format", choices=("table", "jsonl"), default="table",
            help="table, or jsonl with the raw bytes in base64 (default: %(default)s)"),
    ],
)
def dead_letters(args: argparse.Namespace) -> int:
    dead = _open_dead_letters(existing_data_dir(args))
    if dead is None:
        print("(no dead letters)")
        return 0
    try:
        total = dead.count()
        n = max(args.n, 0)
        letters = dead.read(max(0, total - n), max_records=n) if n else []
    finally:
        dead.close()
    if args.format == "jsonl":
        for d in letters:
            print(msgspec.json.encode(d).decode())  # bytes -> base64
        return 0
    rows = [[iso(d.at_ms), d.source, "-" if d.line is None else str(d.line), d.reason,
             _show_raw(d.raw)] for d in letters]
    print(table(["AT", "SOURCE", "LINE", "REASON", "RAW"], rows, right=["LINE"]))
    print(f"{len(letters)} of {total} dead letters")
    return 0


def _show_raw(raw: bytes) -> str:
    shown = repr(raw[:RAW_SHOWN])[2:-1]
    return shown + (f"... ({len(raw)} bytes)" if len(raw) > RAW_SHOWN else "")
