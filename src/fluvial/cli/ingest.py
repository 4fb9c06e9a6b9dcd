"""``fluvial ingest``: append the lines of a file (or stdin) to the log."""

from __future__ import annotations

import argparse
import os
import sys

from fluvial.cli.app import arg, subcommand, workspace
from fluvial.cli.progress import progress_bar
from fluvial.ingest.files import DEFAULT_MAX_LINE_BYTES, ingest_file

SHOWN_REJECTS = 5

_DESCRIPTION = """\
Append every line of FILE to the event log as an event of kind K.

A .jsonl/.ndjson file holds one JSON object per line: it becomes the payload,
unchanged. Any other file is text: each line becomes {"text": LINE}.
Blank lines are skipped. A line that cannot become a valid event (malformed
JSON, wrong field types, non-UTF-8 bytes, longer than --max-line-bytes...) is
kept in the dead-letter log with the reason and its line number, and ingest
goes on: every line is accepted, a duplicate, blank, or a dead letter.

Envelope of each event:
  device  the payload field named by --device-field, else the file name
          without extension ("stdin" for -)
  ts      the payload field named by --ts-field (epoch ms or ISO-8601),
          else the time of the ingest
  seq     the payload field named by --seq-field, else a number unique to
          this file and line (for stdin: the device's next seq in the log)

Exactly once per file: files are recognised by content (SHA-256). Ingesting
the same content again is refused unless --force; an ingest that was
interrupted (Ctrl-C, kill, crash) resumes where it stopped when run again,
and the lines it repeats are dropped as duplicates.

Exit status: 0 when the file was read (even with rejected lines), 1 when it
could not be (missing file, unknown kind...), 2 for usage errors."""


@subcommand(
    "ingest",
    summary="append the lines of a file (or stdin) to the log as events",
    description=_DESCRIPTION,
    example="fluvial ingest tweets.jsonl --kind tweet --device-field user --ts-field ts\n"
            "tail -f sensor.log | fluvial ingest - --kind line",
    args=[
        arg("file", metavar="FILE", help="the input file, or - for stdin"),
        arg("--kind", required=True, metavar="K",
            help="registered schema of the events (see `fluvial schema list`)"),
        arg("--device-field", metavar="F",
            help="payload field holding the device id (default: the file name without extension)"),
        arg("--ts-field", metavar="F",
            help="payload field holding the event time, epoch ms or ISO-8601 "
                 "(default: the time of the ingest)"),
        arg("--seq-field", metavar="F",
            help="payload field holding the device's sequence number "
                 "(default: a number unique to the file and line)"),
        arg("--force", action="store_true",
            help="ingest a file whose content was ingested before (stored again)"),
        arg("--format", choices=("auto", "jsonl", "text"), default="auto",
            help="jsonl: one JSON object per line; text: {\"text\": line}; "
                 "auto (default): jsonl for .jsonl/.ndjson files, text otherwise and for stdin"),
        arg("--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES, metavar="N",
            help="longer lines are dead-lettered with their first N bytes "
                 "(default: %(default)s = 1 MiB)"),
    ],
)
def ingest(args: argparse.Namespace) -> int:
    stdin = args.file == "-"
    source = sys.stdin.buffer if stdin else args.file
    fmt = None if args.format == "auto" else args.format
    if stdin and fmt is None:
        fmt = "text"
    total = None
    if not stdin:
        try:
            total = os.path.getsize(args.file)
        except OSError:
            total = None  # ingest_file says what is wrong with it
    with workspace(args, writer=True) as ws, \
            progress_bar(total, f"ingest {'stdin' if stdin else os.path.basename(args.file)}") as bar:
        report = ingest_file(
            ws, source, kind=args.kind, device_field=args.device_field, ts_field=args.ts_field,
            seq_field=args.seq_field, format=fmt, name="stdin" if stdin else None,
            max_line_bytes=args.max_line_bytes, progress=bar.update, force=args.force)
    if report.resumed_after:
        print(f"resumed an interrupted ingest of this file after line {report.resumed_after}")
    hint = " (see `fluvial log dead-letters`)" if report.rejected else ""
    print(f"accepted {report.accepted}, duplicates {report.duplicates}, "
          f"rejected {report.rejected}{hint}")
    for line_no, reason in report.rejected_examples[:SHOWN_REJECTS]:
        print(f"  line {line_no}: {reason}")
    if report.rejected > SHOWN_REJECTS:
        print(f"  ... and {report.rejected - SHOWN_REJECTS} more")
    blank = f", {report.skipped} blank" if report.skipped else ""
    print(f"read {report.lines} lines{blank} in {report.seconds:.2f} s "
          f"({report.lines_per_s:,.0f} lines/s)")
    return 0
