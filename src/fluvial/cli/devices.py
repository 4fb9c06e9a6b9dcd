"""``fluvial devices``: what the log says about each device."""

from __future__ import annotations

import argparse

from fluvial.cli.app import arg, existing_data_dir, subcommand, workspace
from fluvial.cli.fmt import count_arg, duration_ms, iso, table, to_json
from fluvial.cli.progress import progress_bar
from fluvial.errors import ConfigError

_DESCRIPTION = """\
List every device that wrote to the log, after bringing the device table up to date
with the log (the server keeps it up to date too; both may run at once):

  EVENTS      events the log holds from it
  LAST SEEN   when the log stored its last event (wall clock)
  LAST EVENT  the latest event time it stamped (future-stamped events aside)
  LATE        events stamped more than 30 s behind its own latest event time
              (sent out of order by the device; a backlog flushed in order is not late)
  FUTURE      events stamped more than 5 min after the log stored them (a clock ahead:
              kept, queryable, but they move no watermark)
  FLUSHES     backlogs flushed: times it went from sending current events to sending
              events more than 60 s older than their arrival (back from offline)
  QUIET       nothing stored from it for --quiet-after (default 10m)"""

def _quiet_after(text: str) -> int:
    try:
        total = duration_ms(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a device is quiet after more than 0 ms")
    return total


@subcommand(
    "devices",
    summary="list the devices: last seen, late, future-stamped, backlogs, quiet",
    description=_DESCRIPTION,
    example="fluvial devices\nfluvial devices --quiet --quiet-after 30m\nfluvial devices --format jsonl",
    args=[
        arg("--quiet", action="store_true", help="only the devices quiet now"),
        arg("--quiet-after", type=_quiet_after, default=600_000, metavar="DURATION",
            help="how long a device may send nothing before it is quiet (default: 10m)"),
        arg("--format", choices=("table", "json", "jsonl"), default="table",
            help="output format (default: %(default)s)"),
        arg("--max-records", type=count_arg, default=100_000, metavar="N",
            help="log records read per partition and commit while updating the table (default: %(default)s)"),
    ],
)
def devices(args: argparse.Namespace) -> int:
    from fluvial.layers.devices import DeviceTracker, list_devices

    with workspace(args, existing_data_dir(args)) as ws:
        tracker = DeviceTracker(ws.log, ws.store, max_records=args.max_records)
        behind = sum(e - o for e, o in zip(ws.log.end_offsets(), tracker.position()))
        bar = progress_bar(behind, "reading the log", unit="events")
        try:
            tracker.catch_up(bar.update)
        finally:
            bar.close()
        rows = list_devices(ws.store, quiet_after_ms=args.quiet_after)
    if args.quiet:
        rows = [r for r in rows if r["quiet"]]
    if args.format == "jsonl":
        for r in rows:
            print(to_json(r))
    elif args.format == "json":
        print(to_json({"devices": rows}))
    elif not rows:
        print("(no quiet devices)" if args.quiet else "(no devices: the log holds no events)")
    else:
        print(table(["DEVICE", "PARTITION", "EVENTS", "LAST SEEN", "LAST EVENT", "LATE", "FUTURE", "FLUSHES",
                     "QUIET"],
                    [[r["device"], r["partition"], r["events"], iso(r["last_seen_ms"]),
                      iso(r["last_event_ms"]) if r["last_event_ms"] is not None else "-", r["late"], r["future"],
                      r["flushes"], "yes" if r["quiet"] else "no"] for r in rows],
                    right=["PARTITION", "EVENTS", "LATE", "FUTURE", "FLUSHES"]))
    return 0

