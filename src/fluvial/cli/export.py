"""``fluvial log export``: the master dataset as Parquet, for the batch layer over history."""

from __future__ import annotations

import argparse

from fluvial.cli.app import arg, existing_data_dir, subcommand, workspace
from fluvial.cli.progress import progress_bar
from fluvial.errors import LogError

_DESCRIPTION = """\
Write the event log as Parquet into DIR, partitioned Hive-style by kind and
UTC date of the event time:

  DIR/kind=<kind>/date=<YYYY-MM-DD>/part-<partition>-<first>-<last>.parquet

with the columns device, kind, ts, seq, payload (JSON), partition, offset,
append_ms (and payload_msgpack, set only where JSON cannot hold a payload
exactly). Incremental and append-only: each run writes only the events the
log gained since the previous export of DIR, into new files; the manifest
DIR/_fluvial_export.json lists the files and the offsets exported up to,
and is replaced last, so an interrupted export is completed by the next one.

Run the batch layer over the export (from Python):

  import fluvial
  from fluvial.engine.batch import BatchRunner
  from fluvial.log.parquet import ParquetLog

  with fluvial.open(DATA_DIR) as ws:
      runner = BatchRunner(log=ParquetLog.open("DIR"), store=ws.store)
      runner.run(pipeline)   # same views as over the log up to the export

Spark: spark.read.option("basePath", "DIR").parquet(*parquet_files("DIR"))
with fluvial.log.parquet.parquet_files (only the files the manifest lists)."""


@subcommand(
    "log export",
    summary="export the log as Parquet by kind and date (incremental)",
    description=_DESCRIPTION,
    example="fluvial log export --format parquet exports/master",
    args=[
        arg("dir", metavar="DIR", help="export directory (created if missing)"),
        arg("--format", choices=("parquet",), default="parquet",
            help="file format (default: %(default)s)"),
    ],
)
def export(args: argparse.Namespace) -> int:
    from fluvial.log.parquet import export_parquet

    path = existing_data_dir(args)
    ws = workspace(args, path)
    if not ws.has_log():
        raise LogError(f"no events in {path}: the log is empty. Ingest some first "
                       f"(`fluvial --data-dir {path} ingest FILE --kind KIND`)")
    with ws.log as log:
        total = sum(e - s for s, e in zip(log.start_offsets(), log.end_offsets()))
        with progress_bar(total, "export", unit="rec") as bar:
            report = export_parquet(log, args.dir, progress=bar.update)
    if report.events == 0 and not report.lost:
        print(f"{args.dir} is up to date: nothing new since the last export")
    else:
        print(f"exported {report.events} events into {report.files} files in "
              f"{report.seconds:.2f} s ({report.events_per_s:,.0f} events/s)")
    if report.lost:
        print(f"left out {report.lost} placeholders of records lost to damage (listed in the manifest; "
              "`fluvial log salvage` reports them)")
    print(f"offsets up to: {report.upto}")
    return 0
