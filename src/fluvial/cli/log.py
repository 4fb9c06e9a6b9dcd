"""``fluvial log stats|tail|dead-letters|verify|salvage``: look into, check and repair the logs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from fluvial.cli.app import arg, existing_data_dir, subcommand, workspace
from fluvial.cli.fmt import iso, table, to_json
from fluvial.errors import ConfigError, CorruptLogError

RAW_SHOWN = 60
BAR_MIN_BYTES = 16 << 20  # a progress bar for logs at least this big (on a terminal)


def _open_log(args: argparse.Namespace, path: Path) -> Any:
    """The log (``--log``, default the data directory's), readonly; None when nothing was ever ingested."""
    ws = workspace(args, path)
    return ws.log if ws.has_log() else None


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
    damaged: dict[int, str] = {}
    try:
        log = _open_log(args, path)
        parts = [] if log is None else log.stats()
        if log is not None:
            log.close()
        dead: int | str = _dead_count(path)
    except CorruptLogError:  # show what the headers say, and where the damage is
        parts, dead, damaged = _scanned_stats(path, _file_log_dir(args, path, "stats"))
    rows = [[str(s.partition), str(s.records), f"[{s.start_offset}, {s.end_offset})",
             iso(s.min_ts), iso(s.max_ts), str(s.bytes)] for s in parts]
    known = [s for s in parts if s.min_ts is not None]
    rows.append(["total", str(sum(s.records for s in parts)), "",
                 iso(min(s.min_ts for s in known)) if known else "-",
                 iso(max(s.max_ts for s in known)) if known else "-",
                 str(sum(s.bytes for s in parts))])
    headers = ["PARTITION", "RECORDS", "OFFSETS", "FIRST EVENT TIME", "LAST EVENT TIME", "BYTES"]
    if damaged:
        headers.append("STATUS")
        for row, s in zip(rows, parts):
            row.append(f"DAMAGED: {damaged[s.partition]}; run `fluvial log verify`"
                       if s.partition in damaged else "ok")
        rows[-1].append("")
    print(table(headers, rows, right=["RECORDS", "BYTES"]))
    print(f"dead letters: {dead}")
    _print_salvaged(path)
    return 0


def _scanned_stats(path: Path, log_dir: Path) -> tuple[list[Any], int | str, dict[int, str]]:
    """Stats from scanning the segment files, for logs that do not open: (partitions, dead letters,
    what is wrong per damaged partition of the event log)."""
    from fluvial.log.base import PartitionStats
    from fluvial.log.verify import verify

    report = verify(path, mode="checksums", log_dir=log_dir)  # the log does not open: worth a full read
    parts, damaged = [], {}
    dead: int | str = 0
    for r in report.partitions:
        if r.log == "dead-letters":
            dead = r.records if not r.problems else f"{r.records} (DAMAGED: run `fluvial log verify`)"
            continue
        parts.append(PartitionStats(partition=r.partition, start_offset=r.start_offset, end_offset=r.end_offset,
                                    records=r.records, min_ts=r.min_ts, max_ts=r.max_ts, bytes=r.bytes))
        if r.problems:
            first = r.problems[0]
            where = f" at byte {first.byte_range[0]}" if first.byte_range else ""
            more = f" (+{len(r.problems) - 1} more)" if len(r.problems) > 1 else ""
            damaged[r.partition] = f"{first.file}{where}: {first.what.split(';')[0]}{more}"
    return parts, dead, damaged


def _print_salvaged(path: Path) -> None:
    from fluvial.log.salvage import QUARANTINE, salvage_history

    history = salvage_history(path)
    if history:
        lost = sum(h.get("records_lost") or 0 for h in history)
        print(f"salvaged before: {len(history)} time(s), {lost} records lost "
              f"(kept as placeholders of kind fluvial.lost; reports in {path / QUARANTINE})")


def _tail(log: Any, n: int, kind: str | None) -> list[tuple[int, int, int, Any]]:
    """The last ``n`` events (of ``kind``) as (append_ms, partition, offset, event); without
    the placeholders of records lost to damage unless ``kind`` names them."""
    from fluvial.events.lost import LOST_KIND

    found: list[tuple[int, int, int, Any]] = []
    for p, (start, end) in enumerate(zip(log.start_offsets(), log.end_offsets())):
        picked: list[tuple[int, int, int, Any]] = []
        stop, window = end, max(n, 1)
        while stop > start and len(picked) < n:  # read backwards until n matches
            lo = max(start, stop - window)
            batch = log.read(p, lo, stop_offset=stop, max_records=stop - lo)
            got = [(ms, p, lo + i, ev) for i, (ev, ms) in enumerate(zip(batch.events, batch.append_ms))
                   if ev.kind == kind or (kind is None and ev.kind != LOST_KIND)]
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
    log = _open_log(args, existing_data_dir(args))
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


# -- verify and salvage ------------------------------------------------------------------------

def _file_log_dir(args: argparse.Namespace, path: Path, command: str) -> Path:
    """The directory of the event log (``--log file://DIR``, default ``DATA_DIR/log``): verify and
    salvage read and repair segment files, so only a ``file://`` log."""
    from fluvial.backends import log_path

    url = workspace(args, path).log_url
    if not url.startswith("file://"):
        raise ConfigError(f"`fluvial log {command}` checks the segment files of a file:// log; --log {url} is "
                          "not one (a Parquet export is checked by reading it: `fluvial run --from-export`)")
    return log_path(url)


def _scan_bar(path: Path, desc: str, log_dir: Path | None = None) -> Any:
    from fluvial.cli.progress import progress_bar
    from fluvial.log.verify import log_bytes

    total = log_bytes(path, log_dir)
    return progress_bar(total, desc, enabled=None if total >= BAR_MIN_BYTES else False)


def _where(p: Any) -> list[str]:
    """Table cells of a problem: log, partition, file, bytes, offsets, records."""
    stop = "?" if p.offsets is None or p.offsets[1] is None else str(p.offsets[1])
    return [p.log, "-" if p.partition is None else str(p.partition), p.file,
            f"[{p.byte_range[0]}, {p.byte_range[1]})" if p.byte_range else "-",
            f"[{p.offsets[0]}, {stop})" if p.offsets else "-",
            "?" if p.records is None else str(p.records) if p.offsets else "-"]


@subcommand(
    "log verify",
    summary="check every checksum and index of the event log and the dead-letter log",
    description="Read every segment of every partition (read-only: it works while a server runs, and on a "
                "log the server refuses to open) and check each batch: header checksum, offsets in order "
                "within and across segment files, payload checksum, the records decode and match the "
                "header's count and time range; and the de-duplication snapshots. Prints per partition "
                "the segments, batches and records, then every problem with its partition, segment file, "
                "byte range and offsets. Exit code 0: intact; 1: damaged (`fluvial log salvage` repairs "
                "what can be repaired).",
    example="fluvial log verify\nfluvial log verify --format json",
    args=[arg("--format", choices=("table", "json"), default="table",
              help="table, or one JSON document (default: %(default)s)")],
)
def verify_cmd(args: argparse.Namespace) -> int:
    from fluvial.log.verify import verify

    path = existing_data_dir(args)
    log_dir = _file_log_dir(args, path, "verify")
    with _scan_bar(path, "verify", log_dir) as bar:
        report = verify(path, progress=bar.update, log_dir=log_dir)
    if args.format == "json":
        print(to_json(report.to_dict()))
        return 0 if report.intact else 1
    print(table(["LOG", "PARTITION", "SEGMENTS", "BATCHES", "RECORDS", "BYTES", "STATUS"],
                [[r.log, str(r.partition), str(r.segments), str(r.batches), str(r.records), str(r.bytes),
                  "ok" if not r.problems else f"DAMAGED ({len(r.problems)})"] for r in report.partitions],
                right=["SEGMENTS", "BATCHES", "RECORDS", "BYTES"]))
    problems = report.problems
    if problems:
        print()
        print(table(["LOG", "PARTITION", "FILE", "BYTES", "OFFSETS", "RECORDS", "PROBLEM", "SALVAGE"],
                    [[*_where(p), p.what, p.fix] for p in problems], right=["RECORDS"]))
    for r in report.partitions:
        for note in r.notes:
            print(f"note: {r.log} partition {r.partition}: {note}")
    print(_verify_summary(report, path))
    return 0 if report.intact else 1


def _verify_summary(report: Any, path: Path) -> str:
    records = sum(r.records for r in report.partitions)
    if report.intact:
        return (f"intact: {len(report.partitions)} partitions, {records} records; every checksum and index "
                "checks")
    problems = report.problems
    parts = sorted({(p.log, p.partition) for p in problems}, key=str)
    at_risk = [p.lost for p in problems]
    risk = f"{sum(n for n in at_risk if n)}{' or more' if None in at_risk else ''}"
    fixable = all(p.fixable for p in problems)
    return (f"DAMAGED: {len(problems)} problem(s) in " + ", ".join(
                f"{log} {'log' if p is None else f'partition {p}'}" for log, p in parts)
            + f"; {risk} records cannot be read. "
            + ("Stop the server, then run `fluvial log salvage`: it keeps every intact record, moves the "
               f"damage to {path}/log-quarantine with a report, and keeps the offsets (`--dry-run` first "
               "to see what it would do)." if fixable else
               "Some of it needs a person (see SALVAGE); `fluvial log salvage` repairs the rest."))


@subcommand(
    "log salvage",
    summary="keep every intact record, move damaged batches aside (DATA_DIR/log-quarantine)",
    description="Repair what `fluvial log verify` finds: each damaged batch is moved to "
                "DATA_DIR/log-quarantine/<time>/ (with the segment file as it was) and replaced by "
                "placeholders of kind fluvial.lost at the same offsets, so checkpoints and positions stay "
                "valid and the readers skip them; a header with one flipped bit is repaired and its records "
                "kept. report.json there lists exactly what was lost (log, partition, offsets, bytes, "
                "records). Needs the log to itself: stop the server first. Running it again finds nothing.",
    example="fluvial log salvage --dry-run\nfluvial log salvage",
    args=[arg("--dry-run", action="store_true", help="say what would be done, change nothing"),
          arg("--format", choices=("table", "json"), default="table",
              help="table, or one JSON document (default: %(default)s)")],
)
def salvage_cmd(args: argparse.Namespace) -> int:
    from fluvial.log.salvage import salvage

    path = existing_data_dir(args)
    log_dir = _file_log_dir(args, path, "salvage")
    with _scan_bar(path, "salvage", log_dir) as bar:
        result = salvage(path, dry_run=args.dry_run, progress=bar.update, log_dir=log_dir)
    done = (result.dry_run or result.after is None or result.after.intact) and not result.unfixed
    if args.format == "json":
        print(to_json(result.to_dict()))
        return 0 if done else 1
    if result.actions:
        print(table(["LOG", "PARTITION", "FILE", "BYTES", "OFFSETS", "RECORDS", "LOST", "DONE"],
                    [[*_where(a.problem), "?" if a.lost is None else str(a.lost), a.done]
                     for a in result.actions], right=["RECORDS", "LOST"]))
    for p in result.unfixed:
        print(f"not repaired: {p.log} partition {p.partition} {p.file}: {p.what}; {p.fix}")
    print(_salvage_summary(result))
    return 0 if done else 1


def _salvage_summary(result: Any) -> str:
    lost = f"{result.lost}{' or more' if result.lost_unknown else ''}"
    if not result.actions:
        return "nothing to salvage: every checksum and index checks" if not result.unfixed else \
            "nothing salvage can repair"
    if result.dry_run:
        held = f" ({result.writer}: stop it before salvaging)" if result.writer else ""
        return f"dry run: {len(result.actions)} problem(s) to repair, {lost} records would be lost{held}"
    after = "the log is intact now" if result.after is not None and result.after.intact else \
        "problems remain: run `fluvial log verify`"
    return (f"salvaged {len(result.actions)} problem(s): {lost} records lost, kept as placeholders at their "
            f"offsets; moved to {result.quarantine} (report.json); {after}")
