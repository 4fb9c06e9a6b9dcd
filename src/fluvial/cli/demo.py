"""``fluvial demo``: the Lambda architecture, live.

Starts ``fluvial serve`` on the embedded defaults (a fresh data directory)
with the example flows ``hashtag_top10`` and ``device_stats``, and simulated
devices posting readings and tweets to it over HTTP; some devices go offline
and flush their backlog later (out-of-order and very late events).  Every 5 s
it prints what came in and what the views say now; the batch layer runs on a
schedule and gives "the final answer" (late events correct the speed layer's views already,
within the correction horizon).  Prints the URL
and commands to try; runs until Ctrl-C or --seconds N.

``--offline``: the same cycle without a server, on generated files: ingest
history, batch layer, new events through the speed layer (batch ⊕ realtime),
batch layer again.

``--cluster``: beyond one machine, on this one -- a 3-node NATS JetStream
cluster, two ingest nodes, two workers sharing the partitions, views in
PostgreSQL; kill any process and watch nothing get lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from fluvial.cli.app import arg, subcommand
from fluvial.cli.demo_cluster import DEFAULT_STORE, run_cluster_demo
from fluvial.cli.fmt import iso
from fluvial.config import StreamConfig
from fluvial.errors import ConfigError
from fluvial.flowfile import load_pipelines
from fluvial.ingest import ingest_file
from fluvial.workspace import Workspace

MARKER = ".fluvial-demo"
T0_MS = 1_452_124_400_000          # the seed's "Time: 1452124409000 ms" era


def generate(folder: Path, *, tweets: int, readings: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Two parts (history, then new events) of tweets and of readings, as JSON lines."""
    rng = random.Random(seed)
    words = ["spark", "kafka", "iot", "stream", "lambda", "kappa", "sensor", "edge", "data", "flink"]
    tags = [f"#{w}" for w in words] + [f"#tag{i}" for i in range(40)]
    weights = [1 / (i + 1) ** 1.1 for i in range(len(tags))]
    tweet_rows = []
    for i in range(tweets):
        text = " ".join(rng.choices(words, k=6) + rng.choices(tags, weights, k=rng.randint(1, 3)))
        tweet_rows.append({"ts": T0_MS + i * 20, "user": f"u{rng.randrange(500)}", "text": text})
    reading_rows = []
    kinds = ["temp", "humidity", "battery"]
    for i in range(readings):
        ts = T0_MS + i * 10
        if rng.random() < 0.02:                      # a device flushing its offline backlog
            ts -= rng.randrange(10_000, 120_000)
        reading_rows.append({"device": f"dev-{rng.randrange(50):03d}", "ts": ts,
                             "kind": rng.choice(kinds), "value": round(rng.gauss(20, 5), 3)})
    parts: tuple[list[Path], list[Path]] = ([], [])
    for name, rows in (("tweets", tweet_rows), ("readings", reading_rows)):
        cut = len(rows) * 4 // 5
        for k, chunk in enumerate((rows[:cut], rows[cut:])):
            path = folder / f"{name}-{k + 1}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in chunk))
            parts[k].append(path)
    return parts


def _examples_dir(choice: str | None) -> Path:
    candidates = [Path(choice)] if choice else [Path("examples"),
                                                Path(__file__).resolve().parents[3] / "examples"]
    for folder in candidates:
        if (folder / "hashtag_top10.py").is_file() and (folder / "device_stats.py").is_file():
            return folder
    raise ConfigError("the demo runs examples/hashtag_top10.py and examples/device_stats.py: run it "
                      "from the fluvial repository, or give --examples DIR")


def _ingest(ws: Workspace, files: list[Path]) -> int:
    """Ingest the files; return how many readings were accepted."""
    readings = 0
    for path in files:
        kind, device = ("tweet", "user") if path.name.startswith("tweets") else ("reading", "device")
        r = ingest_file(ws, path, kind=kind, device_field=device, ts_field="ts")
        print(f"   ingest {path.name:<16} accepted {r.accepted:>6,}  rejected {r.rejected}")
        readings += r.accepted if kind == "reading" else 0
    return readings


def _show(ws: Workspace, title: str, readings: int) -> None:
    store = ws.store
    top = store.query("hashtag_top10")
    info = store.view("hashtag_top10")
    print(f"   {title}")
    last = top[-1] if top else None
    if last is not None and last.window is not None:
        print(f"   hashtag_top10 v{info.alias_version}, window {iso(last.window[0])} .. "
              f"{iso(last.window[1])} ({len(top)} windows):")
        print("     " + "  ".join(f"{tag} {n}" for tag, n in last.value[:6]))
    stats = store.query("device_stats")
    counted = sum(r.value["count"] for r in stats)
    late = store.view("device_stats").late_events
    print(f"   device_stats: {len(stats):,} rows (device, kind, minute) counting {counted:,} of the "
          f"{readings:,} readings ingested; the speed layer has seen {late} late")


@subcommand(
    "demo",
    summary="run fluvial serve with the example flows and simulated devices, and show the live views",
    description=__doc__ or "",
    example="fluvial demo                 # until Ctrl-C\nfluvial demo --seconds 60 --devices 200 --rate 3000\n"
            "fluvial demo --offline       # the batch/speed cycle on generated files, no server\n"
            "fluvial demo --cluster       # NATS cluster, 2 ingest nodes, 2 workers, PostgreSQL",
    args=[
        arg("--demo-dir", default=".fluvial-demo", metavar="DIR",
            help="data directory of the demo, emptied first (default: %(default)s)"),
        arg("--examples", metavar="DIR", help="where hashtag_top10.py and device_stats.py are "
                                              "(default: ./examples)"),
        arg("--seconds", type=float, default=None, metavar="N", help="stop after N seconds (default: Ctrl-C)"),
        arg("--port", type=int, default=8470, help="port of the server (default: %(default)s; 0: a free one)"),
        arg("--devices", type=int, default=100, help="simulated devices (default: %(default)s)"),
        arg("--rate", type=float, default=1000, help="simulated events per second (default: %(default)s)"),
        arg("--batch-every", type=float, default=20, metavar="S",
            help="seconds between batch-layer runs (default: %(default)s)"),
        arg("--offline", action="store_true",
            help="instead: generate files, run the batch layer, the speed layer, the batch layer again"),
        arg("--tweets", type=int, default=20_000, help="--offline: tweets to generate (default: %(default)s)"),
        arg("--readings", type=int, default=50_000, help="--offline: readings to generate (default: %(default)s)"),
        arg("--seed", type=int, default=7, help="random seed of the generators (default: %(default)s)"),
        arg("--cluster", action="store_true",
            help="instead: every part a process of its own -- a 3-node NATS JetStream cluster (the "
                 "installed nats-server), two ingest nodes, two workers, views in a fresh schema of "
                 f"PostgreSQL (--store postgresql://..., default {DEFAULT_STORE}) -- with simulated devices; "
                 "kill any of them and watch nothing get lost"),
        arg("--restart", action="store_true", help="--cluster: restart the processes that die (or are killed)"),
    ],
)
def demo(args: argparse.Namespace) -> int:
    if args.offline and args.cluster:
        raise ConfigError("--offline and --cluster are two different demos: choose one")
    if args.offline:
        return _offline(args)
    if args.cluster:
        return run_cluster_demo(args, _fresh_dir(args.demo_dir), _examples_dir(args.examples))
    if args.restart:
        raise ConfigError("--restart goes with --cluster")
    return _live(args)


def _fresh_dir(path: str) -> Path:
    home = Path(path)
    if home.exists():
        if not (home / MARKER).exists():
            raise ConfigError(f"{home} exists and is not a demo directory: choose another --demo-dir")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by `fluvial demo`; safe to delete\n")
    return home


def _live(args: argparse.Namespace) -> int:
    import dataclasses
    import threading

    from fluvial.cli.serve import run_server
    from fluvial.settings import FlowSettings, ServerSettings, Settings
    from fluvial.simulate import Simulator

    if args.devices < 1 or args.rate <= 0:
        raise ConfigError("--devices must be >= 1 and --rate > 0")
    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    home = _fresh_dir(args.demo_dir)
    examples = _examples_dir(args.examples)
    data = (home / "data").resolve()
    settings = Settings(data_dir=data, server=ServerSettings(port=args.port, auth="none"),
                        flows=tuple(FlowSettings(file=(examples / f).resolve()) for f in
                                    ("hashtag_top10.py", "device_stats.py")))
    settings = dataclasses.replace(settings, batch=dataclasses.replace(settings.batch, every_s=args.batch_every))
    stop = threading.Event()
    me = _command_name()

    made: dict[str, Any] = {}

    def announce(url: str) -> None:
        sim = made["sim"] = Simulator(url, devices=args.devices, rate=args.rate, kinds=("reading", "tweet"),
                                      seed=args.seed, batch=max(1, min(500, int(args.rate // 5) or 1)))
        first = next(e for e in sim.events(200) if e.kind == "reading")   # a key that will have rows
        key = json.dumps([first.device, first.payload["kind"]], separators=(",", ":"))
        print(f"""fluvial demo: serving on {url}  (live UI: {url}/ui, API docs: {url}/docs)
  speed layer: hashtag_top10 and device_stats, micro-batches every {settings.stream.batch_interval_ms} ms
  batch layer: every {args.batch_every:g} s (the final answer; late events correct the realtime views too)
  devices:     {args.devices} simulated devices posting {args.rate:g} events/s (readings and tweets;
               some go offline and flush their backlog later: out-of-order and very late events)

Try, in another terminal:
  curl -s {url}/v1/views | python3 -m json.tool
  curl -sg '{url}/v1/views/device_stats?key={key}'      # -g: [ ] are not curl globs
  curl -s {url}/v1/metrics
  curl -s -X POST {url}/v1/views/device_stats/batch
  {me} --data-dir {data} query hashtag_top10 --format jsonl | tail -n 1
  {me} --data-dir {data} views
Stop with Ctrl-C{f" (or wait {args.seconds:g} s)" if args.seconds else ""}.
""", flush=True)

    def started(server: Any, uv: Any) -> None:
        sim = made["sim"]
        threading.Thread(target=sim.run, kwargs={"stop": stop}, name="fluvial-demo-devices", daemon=True).start()
        threading.Thread(target=_watch, args=(server, sim, stop), name="fluvial-demo-watch", daemon=True).start()
        if args.seconds:
            def finish() -> None:
                stop.set()
                uv.should_exit = True
            timer = threading.Timer(args.seconds, finish)
            timer.daemon = True
            timer.start()

    try:
        return run_server(settings, announce=announce, on_started=started)
    finally:
        stop.set()


def _watch(server: Any, sim: Any, stop: Any) -> None:
    """Every few seconds: what came in, and what the views say now."""
    import time

    from fluvial.backends import open_store

    store = open_store(server.ws.store_url)   # a connection of its own, to the server's store
    tick = 0
    try:
        while not stop.wait(5.0):
            tick += 1
            m = server.metrics
            try:
                infos = {v.name: v for v in store.views()}
                now_ms = int(time.time() * 1000)
                top = [r for r in store.query("hashtag_top10", from_ms=now_ms - 62_000)
                       if r.window is not None and r.window[1] <= now_ms] if "hashtag_top10" in infos else []
                stats = infos.get("device_stats")
                rows = store.query("device_stats") if stats else []
                groups, counted = len(rows), sum(r.value["count"] for r in rows)
            except Exception as exc:  # the demo keeps going; say what happened
                print(f"[{tick * 5:>4}s] (views not readable yet: {exc})", flush=True)
                continue
            latest = top[-1].value[:5] if top else []
            tags = ", ".join(f"{t} {n}" for t, n in latest) or "-"
            late = stats.late_events if stats else 0
            version = f"v{stats.alias_version}" if stats and stats.alias_version else "no batch yet"
            print(f"[{tick * 5:>4}s] in: {m.events_accepted:,} events ({m.rate():,.0f}/s), "
                  f"dead letters {m.dead_letters} | device_stats: {counted:,} readings in {groups:,} rows, "
                  f"{version}, {late} late | top hashtags, last 60 s: {tags}", flush=True)
    finally:
        store.close()


def _offline(args: argparse.Namespace) -> int:
    if args.tweets < 10 or args.readings < 10:
        raise ConfigError("--tweets and --readings must be at least 10")
    home = _fresh_dir(args.demo_dir)
    examples = _examples_dir(args.examples)
    pipelines: list[Any] = []
    for name in ("hashtag_top10.py", "device_stats.py"):
        pipelines += load_pipelines(str(examples / name))

    print(f"1. Generating {args.tweets:,} tweets and {args.readings:,} readings (seed {args.seed})")
    history, fresh = generate(home, tweets=args.tweets, readings=args.readings, seed=args.seed)
    with Workspace(home / "data", writer=True) as ws:
        readings = _ingest(ws, history)
        print("2. Batch layer: every view recomputed from all history")
        for p in pipelines:
            s = ws.batch_runner().run(p)
            print(f"   {p.name}: {s.records_in:,} records in {s.seconds:.2f} s -> "
                  + ", ".join(f"{v}@v{n}" for v, n in s.views.items()))
        _show(ws, "query = batch", readings)
        print("3. New events arrive; the speed layer processes them in micro-batches")
        readings += _ingest(ws, fresh)
        for p in pipelines:
            s = ws.stream_runner(StreamConfig(batch_interval_ms=0, max_batch_records=5_000)).run(
                p, until_caught_up=True)
            print(f"   {p.name}: {s.records_in:,} records in {s.micro_batches} micro-batches, "
                  f"{s.late_events} late")
        _show(ws, "query = batch ⊕ realtime (late events counted, and correcting their windows)", readings)
        print("4. Batch layer again: the final answer (the same figures: nothing was too late)")
        for p in pipelines:
            ws.batch_runner().run(p)
        _show(ws, "query = batch (the realtime part is now covered)", readings)
    data = home / "data"
    me = _command_name()
    print(f"""
Try:
  {me} --data-dir {data} views
  {me} --data-dir {data} query hashtag_top10 --format jsonl | tail -n 1
  {me} --data-dir {data} query device_stats --key '["dev-007","temp"]'
  {me} --data-dir {data} log stats
  {me} explain {examples / 'hashtag_top10.py'}""")
    return 0


def _command_name() -> str:
    """``fluvial`` when that is on PATH, else the path this process was started as
    (``.venv/bin/fluvial`` after ``make demo``)."""
    argv0 = sys.argv[0]
    on_path = shutil.which("fluvial")
    if not argv0.endswith("fluvial") or (on_path and os.path.samefile(on_path, argv0)):
        return "fluvial"
    return os.path.relpath(argv0)
