"""``fluvial shell``: a Python REPL with fluvial in scope (Spark's interactive shells).

The namespace holds ``fl`` (the ``fluvial`` package), ``ws`` (the data
directory's workspace), ``pipeline`` (a pipeline to build flows on) and helpers:
``kinds()``, ``views()``, ``log(kind)``, ``show(view)`` and ``run(flow)``.  The
actions (``collect``, ``take``, ``count``...) run on the workspace's batch
runner, so ``log("reading").take(5)`` reads this directory's log.  IPython is
used when it is installed (and ``--plain`` is not given), else the standard
library's ``code.interact``; Ctrl-D leaves with exit status 0.
"""

from __future__ import annotations

import argparse
import code
from pathlib import Path
from typing import Any

from fluvial.cli.app import arg, subcommand, workspace
from fluvial.cli.fmt import table

__all__ = ["namespace", "shell"]

_HELP = """\
  fl             the fluvial package            ws        this data directory (log, store, schemas)
  pipeline       a Pipeline named "shell"       log(kind) pipeline.from_log(kind): a Flow of events
  kinds()        the registered event kinds     views()   the views of the store, with their versions
  show(view, n=20, key=...)   print the merged rows of a view (batch + realtime)
  run(flow, mode="batch")     run a Pipeline, a Flow's pipeline, or a flow file's pipelines
  actions (collect, take, first, take_ordered, count...) run on this directory's batch runner"""


def namespace(ws: Any) -> dict[str, Any]:
    """The shell's globals for the workspace ``ws``."""
    import fluvial as fl
    from fluvial.flow.graph import set_default_runner

    set_default_runner(lambda: ws.batch_runner(progress=False))
    pipeline = fl.Pipeline("shell")

    def kinds() -> list[str]:
        """The event kinds registered in this data directory (``fluvial schema list``)."""
        return sorted(ws.schemas.kinds())

    def views() -> list[str]:
        """The views of the serving store; prints their versions and late counts too."""
        infos = ws.store.views()
        if infos:
            print(table(["VIEW", "VERSION", "LATE"],
                        [[v.name, f"v{v.alias_version}" if v.alias_version else "-", str(v.late_events)]
                         for v in infos], right=["LATE"]))
        return [v.name for v in infos]

    def log(kind: str | None = None) -> fl.Flow[fl.Event]:
        """The events of ``kind`` (all kinds: None) in the log, as a flow of ``pipeline``."""
        return pipeline.from_log(kind)

    def show(view: str, n: int = 20, **query: Any) -> None:
        """Print the first ``n`` merged rows of ``view`` (``key=``, ``from_ms=``, ``to_ms=`` filter)."""
        rows = ws.store.query(view, **query)
        for row in rows[:n]:
            print(row)
        if len(rows) > n:
            print(f"... {len(rows) - n} more rows")

    def run(flow: Any, mode: str = "batch") -> list[fl.RunStats]:
        """Run ``flow`` -- a Pipeline, a Flow (its pipeline) or a flow file's path -- on this
        directory: ``mode="batch"`` writes new view versions, ``"stream"`` runs until caught up."""
        from fluvial.flowfile import load_pipelines

        if isinstance(flow, str | Path):
            pipelines = load_pipelines(str(flow))
        else:
            pipelines = [flow.pipeline if isinstance(flow, fl.Flow) else flow]
        if mode not in ("batch", "stream"):
            raise fl.ConfigError(f"run(): mode is 'batch' or 'stream', got {mode!r}")
        stats = []
        for p in pipelines:
            if mode == "batch":
                stats.append(ws.batch_runner(progress=False).run(p))
            else:
                stats.append(ws.stream_runner().run(p, until_caught_up=True))
        return stats

    return {"fl": fl, "fluvial": fl, "ws": ws, "pipeline": pipeline, "kinds": kinds, "views": views,
            "log": log, "show": show, "run": run, "help_fluvial": lambda: print(_HELP)}


def _banner(ws: Any, names: dict[str, Any]) -> str:
    import fluvial

    kinds = ", ".join(names["kinds"]()) or "(none)"
    views = ", ".join(v.name for v in ws.store.views()) or "(none yet)"
    return (f"fluvial {fluvial.__version__} shell -- data directory {ws.path}\n"
            f"kinds: {kinds}\nviews: {views}\n{_HELP}\n")


@subcommand(
    "shell",
    summary="a Python shell with fluvial and this data directory open",
    description="Open a Python REPL (IPython when installed) with fluvial imported as `fl`, the data "
                "directory's workspace as `ws`, its kinds and views listed, and helpers: log(kind) "
                "gives a flow of the log's events, run(flow) runs a pipeline or a flow file, "
                "show(view) prints a view's rows, views() and kinds() list them. Actions "
                "(collect, take, count...) run on this directory's batch runner. Ctrl-D leaves.",
    example="fluvial shell\n"
            ">>> log('reading').map(lambda e: e.device).distinct().take(5)\n"
            ">>> run('examples/device_stats.py'); show('device_stats', 5)",
    args=[arg("--plain", action="store_true",
              help="the standard Python REPL even when IPython is installed")],
)
def shell(args: argparse.Namespace) -> int:
    with workspace(args) as ws:
        names = namespace(ws)
        banner = _banner(ws, names)
        if not args.plain:
            try:
                from IPython import start_ipython
            except ImportError:
                pass
            else:
                print(banner)
                start_ipython(argv=["--no-banner"], user_ns=names)
                return 0
        code.interact(banner=banner, local=names, exitmsg="")
    return 0
