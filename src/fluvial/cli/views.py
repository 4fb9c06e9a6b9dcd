"""``fluvial query`` and ``fluvial views``: read the serving store."""

from __future__ import annotations

import argparse
from typing import Any

from fluvial.cli.app import arg, existing_data_dir, subcommand, workspace
from fluvial.cli.fmt import iso, json_arg, table, time_arg, to_json
from fluvial.serving.base import UNSET

_QUERY_DESCRIPTION = """\
Print the rows of VIEW: the current batch version merged with the realtime
part the stream runner wrote since (batch + realtime, as in the Lambda
architecture).

Filters:
  --key K    only this key. K is read as JSON when it parses (so 42 is a
             number and '["dev-1","temp"]' a tuple key), else as a string;
             write '"42"' for the string 42.
  --from T   only windows starting at or after T
  --to T     only windows starting before T
             T is epoch ms or ISO-8601 (2016-01-06T12:00:00Z; no offset = UTC).

Formats:
  table  aligned columns, windows as ISO times (default)
  jsonl  one {"key": .., "window": [start_ms, end_ms] | null, "value": ..} per line
  json   {"view": NAME, "version": N, "rows": [...]}"""


@subcommand(
    "query",
    summary="print the merged rows of a view",
    description=_QUERY_DESCRIPTION,
    example="fluvial query hashtags --from 2016-01-06T12:00:00Z --to 2016-01-06T13:00:00Z\n"
            "fluvial query readings --key '[\"dev-1\",\"temp\"]' --format jsonl",
    args=[
        arg("view", metavar="VIEW", help="the view's name (see `fluvial views`)"),
        arg("--key", type=json_arg, default=UNSET, metavar="K",
            help="only this key (JSON if it parses, else a string)"),
        arg("--from", dest="from_ms", type=time_arg, metavar="T",
            help="only windows starting at or after T (epoch ms or ISO-8601)"),
        arg("--to", dest="to_ms", type=time_arg, metavar="T",
            help="only windows starting before T (epoch ms or ISO-8601)"),
        arg("--format", choices=("table", "json", "jsonl"), default="table",
            help="output format (default: %(default)s)"),
    ],
)
def query(args: argparse.Namespace) -> int:
    with workspace(args, existing_data_dir(args)) as ws:
        rows = ws.store.query(args.view, key=args.key, from_ms=args.from_ms, to_ms=args.to_ms)
        version = ws.store.view(args.view).alias_version
    if args.format == "jsonl":
        for row in rows:
            print(to_json(row))
    elif args.format == "json":
        print(to_json({"view": args.view, "version": version, "rows": rows}))
    else:
        print(_rows_table(rows))
    return 0


def _rows_table(rows: list[Any]) -> str:
    if not rows:
        return "(no rows)"
    if any(r.window is not None for r in rows):
        return table(["KEY", "WINDOW START", "WINDOW END", "VALUE"],
                     [[r.key, iso(r.window[0]) if r.window else "-",
                       iso(r.window[1]) if r.window else "-", r.value] for r in rows],
                     right=["VALUE"])
    return table(["KEY", "VALUE"], [[r.key, r.value] for r in rows], right=["VALUE"])


@subcommand(
    "views",
    summary="list the views of the serving store",
    description="List every view: the batch version queries read (its alias), the batch "
                "versions kept, the events the speed layer counted as late, the window and "
                "when the view last changed.",
    example="fluvial views",
)
def views(args: argparse.Namespace) -> int:
    with workspace(args, existing_data_dir(args)) as ws:
        infos = ws.store.views()
    if not infos:
        print("(no views: run a flow that writes one, `fluvial run FLOW_FILE --mode batch`)")
        return 0
    rows = []
    for v in infos:
        window = ",".join(f"{k}={val}" for k, val in (v.window or {}).items()) or "-"
        rows.append([v.name, f"v{v.alias_version}" if v.alias_version else "-",
                     " ".join(f"v{n}" for n in v.versions) or "-", str(v.late_events),
                     iso(v.updated_ms), window])
    print(table(["VIEW", "VERSION", "KEPT", "LATE", "UPDATED", "WINDOW"], rows, right=["LATE"]))
    return 0
