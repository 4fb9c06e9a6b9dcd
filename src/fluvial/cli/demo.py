"""``fluvial demo``: the Lambda architecture in one minute, on generated data.

Tweets and IoT readings are generated (seeded), the first part is ingested and
the batch layer computes the views; then new events arrive and the speed layer
adds them (queries merge batch ⊕ realtime, late events are counted); finally a
second batch run gives "the final answer", late events included.
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
from fluvial.cli.fmt import iso
from fluvial.cli.run import load_pipelines
from fluvial.config import StreamConfig
from fluvial.errors import ConfigError
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
    if top:
        last = top[-1]
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
    summary="generate data, then run the batch and speed layers and show merged views",
    description=__doc__ or "",
    example="fluvial demo\nfluvial demo --tweets 100000 --readings 200000",
    args=[
        arg("--demo-dir", default=".fluvial-demo", metavar="DIR",
            help="data directory of the demo, emptied first (default: %(default)s)"),
        arg("--examples", metavar="DIR", help="where hashtag_top10.py and device_stats.py are "
                                              "(default: ./examples)"),
        arg("--tweets", type=int, default=20_000, help="tweets to generate (default: %(default)s)"),
        arg("--readings", type=int, default=50_000, help="readings to generate (default: %(default)s)"),
        arg("--seed", type=int, default=7, help="random seed of the generator (default: %(default)s)"),
    ],
)
def demo(args: argparse.Namespace) -> int:
    if args.tweets < 10 or args.readings < 10:
        raise ConfigError("--tweets and --readings must be at least 10")
    home = Path(args.demo_dir)
    if home.exists():
        if not (home / MARKER).exists():
            raise ConfigError(f"{home} exists and is not a demo directory: choose another --demo-dir")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by `fluvial demo`; safe to delete\n")
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
        _show(ws, "query = batch ⊕ realtime (late events are left to the batch layer)", readings)
        print("4. Batch layer again: the final answer, late events included")
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
