"""Every example, end to end: generated data -> ingest -> batch run and stream run -> views.

Each test generates its input with a printed seed (``FLUVIAL_TEST_SEED=<n>``
reproduces a run), ingests it into a fresh data directory, runs the example's
module-level pipelines in batch mode and, on another fresh directory, in
stream mode (many small micro-batches, until caught up), and compares the
queried rows with ``tests/brute.py`` computed from the generated file alone.
Standalone entry points (``python examples/X.py``) run in a subprocess.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fluvial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import brute

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
STREAM = fluvial.StreamConfig(batch_interval_ms=0, max_batch_records=250)


# -- data generation (shapes of bench/gen.py, small, seeded) -----------------------------


def _rng(name: str) -> random.Random:
    seed = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"{name}: seed {seed} (FLUVIAL_TEST_SEED={seed} reproduces it)")
    return random.Random(seed)


def _vocab(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) + str(i % 7) for i in range(n)]


def _zipf(n: int, s: float) -> list[float]:
    return [1.0 / r ** s for r in range(1, n + 1)]


def _write(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def gen_lines(path: Path, n: int = 5_000) -> list[dict[str, Any]]:
    """``{"device", "ts", "text"}``: Zipf words, 1-14 per line, some extra spaces."""
    rng = _rng("lines")
    vocab = _vocab(rng, 2_000)
    weights = _zipf(len(vocab), 1.1)
    t0 = 1_452_011_283_000
    rows = []
    for i in range(n):
        words = rng.choices(vocab, weights=weights, k=rng.randint(1, 14))
        sep = "  " if rng.random() < 0.05 else " "
        rows.append({"device": f"d{rng.randrange(50)}", "ts": t0 + i * 100, "text": sep.join(words)})
    return _write(path, rows)


def gen_tweets(path: Path, n: int = 10_000) -> list[dict[str, Any]]:
    """``{"ts", "user", "text"}``: 100 tweets per simulated second (100 s of tweets),
    Zipf hashtags (0-3 per tweet, some upper-case), event time in file order."""
    rng = _rng("tweets")
    vocab = _vocab(rng, 3_000)
    tags = ["#" + t for t in _vocab(rng, 400)]
    tw, ww = _zipf(len(tags), 1.2), _zipf(len(vocab), 1.1)
    t0 = 1_452_124_400_000
    rows = []
    for k in range(n):
        words = rng.choices(vocab, weights=ww, k=6) + rng.choices(tags, weights=tw, k=rng.choice((0, 1, 2, 2, 3)))
        rng.shuffle(words)
        text = " ".join(w.upper() if rng.random() < 0.05 else w for w in words)
        rows.append({"ts": t0 + k * 10, "user": f"u{rng.randrange(2_000)}", "text": text})
    return _write(path, rows)


def gen_readings(path: Path, n: int = 20_000) -> list[dict[str, Any]]:
    """``{"device", "ts", "kind", "value"}``: 200 devices, 100 readings per simulated
    second (~3.3 minutes), ~3% out of order by up to 90 s (so some are late by 30 s)."""
    rng = _rng("readings")
    kinds = ["temp", "humidity", "accel_x", "accel_y", "accel_z", "battery"]
    t0 = 1_700_000_000_000
    rows = []
    for k in range(n):
        ts = t0 + k * 10
        if rng.random() < 0.03:
            ts -= rng.randrange(90_000)
        rows.append({"device": f"dev-{rng.randrange(200):05d}", "ts": ts, "kind": rng.choice(kinds),
                     "value": round(rng.gauss(20, 5), 3)})
    return _write(path, rows)


# Per exercise, the amplitude of the oscillation on x, y, z (m/s²) around (0, 0, 9.8).
_PROFILES = {"rest": (0.05, 0.05, 0.05), "biceps_curl": (4.0, 0.5, 1.1),
             "squat": (0.5, 0.5, 5.0), "shoulder_press": (0.6, 4.0, 1.3)}


def gen_accel(path: Path, devices: int = 8, seconds: int = 80, hz: int = 10) -> list[dict[str, Any]]:
    """Accelerometer readings per device (``hz`` per axis), one exercise per 2 s,
    interleaved with battery readings; event time non-decreasing in file order."""
    rng = _rng("accel")
    t0 = 1_700_000_000_000
    plan = {(d, w): rng.choice(list(_PROFILES)) for d in range(devices) for w in range(seconds // 2)}
    rows = []
    for step in range(seconds * hz):
        ts = t0 + step * 1000 // hz
        for d in range(devices):
            amp = _PROFILES[plan[(d, step // (2 * hz))]]
            phase = 2 * math.pi * (step % (2 * hz)) / (2 * hz)
            for axis, a, base in zip(("accel_x", "accel_y", "accel_z"), amp, (0.0, 0.0, 9.8)):
                value = base + a * math.sin(phase + d) + rng.gauss(0, 0.05)
                rows.append({"device": f"watch-{d}", "ts": ts, "kind": axis, "value": round(value, 4)})
            if step % 50 == 0:
                rows.append({"device": f"watch-{d}", "ts": ts, "kind": "battery", "value": 80.0})
    return _write(path, _as_delivered(rng, rows, hz * (devices * 3 + 1)))


def _as_delivered(rng: random.Random, rows: list[dict[str, Any]], per_second: int) -> list[dict[str, Any]]:
    """The rows as watches deliver them: watch-3 loses its phone for 20 s and syncs the backlog
    in order when it is back; 2% of the others' readings arrive 3-8 s late (behind their watch)."""
    out: list[dict[str, Any]] = []
    backlog: list[dict[str, Any]] = []
    delayed: list[tuple[int, int, dict[str, Any]]] = []
    for i, r in enumerate(rows):
        second = i // per_second
        while delayed and delayed[0][0] <= i:
            out.append(delayed.pop(0)[2])
        if r["device"] == "watch-3" and 20 <= second < 40:
            backlog.append(r)
            continue
        if backlog and second >= 40:
            out.extend(backlog)
            backlog = []
        if r["device"] != "watch-3" and rng.random() < 0.02:
            delayed.append((i + rng.randint(3, 8) * per_second, i, r))
            delayed.sort(key=lambda x: (x[0], x[1]))
            continue
        out.append(r)
    return out + backlog + [r for _, _, r in delayed]


# -- ingest, run, query -----------------------------------------------------------------


FLUVIAL = str(Path(sys.executable).with_name("fluvial"))


def _cli_ready() -> bool:
    """Whether the `fluvial` command works (its ingest, run and query subcommands)."""
    try:
        proc = subprocess.run([FLUVIAL, "--help"], capture_output=True, text=True, timeout=60,
                              check=False)
    except OSError:
        return False
    return proc.returncode == 0 and all(c in proc.stdout for c in ("ingest", "run", "query"))


# Ingest, run and query through the CLI in subprocesses (the real path) once it
# works; through the Python API until then.  FLUVIAL_TEST_VIA=api|cli forces one.
VIA = os.environ.get("FLUVIAL_TEST_VIA") or ("cli" if _cli_ready() else "api")


def cli(data_dir: Path, *args: str) -> str:
    """``fluvial ARGS --data-dir DATA_DIR``, run from the data directory's parent (a
    temporary directory: nothing lands in the work tree if --data-dir were ignored)."""
    proc = subprocess.run([FLUVIAL, *args, "--data-dir", str(data_dir)], cwd=data_dir.parent,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"fluvial {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def ingest(data_dir: Path, path: Path, *, kind: str, device_field: str, ts_field: str) -> int:
    """Append the JSON-lines file to the data directory's log as events of ``kind``
    (payload = the whole object), in file order; returns the number of events."""
    n = len(path.read_text().splitlines())
    if VIA == "cli":
        cli(data_dir, "ingest", str(path), "--kind", kind, "--device-field", device_field,
            "--ts-field", ts_field)
    else:
        with fluvial.open(data_dir, writer=True) as ws:
            events = []
            for seq, line in enumerate(path.read_text().splitlines()):
                obj = json.loads(line)
                events.append(fluvial.Event(device=str(obj[device_field]), kind=kind,
                                            ts=int(obj[ts_field]), seq=seq, payload=obj))
            assert ws.log.append(events).duplicates == 0
    with fluvial.open(data_dir) as ws:
        assert sum(ws.log.end_offsets()) == n, "every line became one event"
    return n


def init_data_dir(data_dir: Path) -> Path:
    """An empty data directory (a log with no events)."""
    with fluvial.open(data_dir, writer=True) as ws:
        ws.log.end_offsets()
    return data_dir


def load_example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"fluvial_example_{name}")


def pipelines(module: dict[str, Any]) -> list[fluvial.Pipeline]:
    found = [v for v in module.values() if isinstance(v, fluvial.Pipeline)]
    assert found, "an example defines module-level fluvial.Pipeline objects"
    return found


def run_example(name: str, mode: str, data_dir: Path, *, out: io.StringIO | None = None
                ) -> list[fluvial.RunStats]:
    """``fluvial run examples/<name>.py --mode <mode>`` (stream: until caught up, small
    micro-batches); ``out`` receives what the pipelines print."""
    module = load_example(name)
    if VIA == "cli":
        args = ["run", str(EXAMPLES / f"{name}.py"), "--mode", mode, "--workers", "1"]
        if mode == "stream":
            args += ["--until-caught-up", "--batch-interval-ms", str(STREAM.batch_interval_ms),
                     "--max-batch-records", str(STREAM.max_batch_records)]
        printed = cli(data_dir, *args)
        if out is not None:
            out.write(printed)
        return [_stats_from_store(data_dir, p, mode) for p in pipelines(module)]
    stats = []
    with fluvial.open(data_dir) as ws:
        for p in pipelines(module):
            if mode == "batch":
                stats.append(ws.batch_runner(workers=1, out=out or io.StringIO()).run(p))
            else:
                stats.append(ws.stream_runner(STREAM, out=out or io.StringIO()).run(p, until_caught_up=True))
    return stats


def _stats_from_store(data_dir: Path, p: fluvial.Pipeline, mode: str) -> fluvial.RunStats:
    """What a CLI run did, read back from the store (checkpoint and view metadata)."""
    from fluvial.state.checkpoint import Checkpoint

    with fluvial.open(data_dir) as ws:
        views = [s.params["name"] for s in p.sinks if s.op == "view"]
        late = sum(ws.store.view(v).late_events for v in views)
        records = sum(ws.log.end_offsets()) if (data_dir / "log").exists() else 0
        if mode == "batch":
            return fluvial.RunStats(p.name, mode, records_in=records, micro_batches=1, late_events=late)
        with ws.store.transaction() as txn:
            blob = txn.get_checkpoint(f"stream:{p.name}")
        assert blob is not None, f"the stream run of {p.name} committed a checkpoint"
        return fluvial.RunStats(p.name, mode, records_in=records,
                                micro_batches=Checkpoint.loads(blob).micro_batches, late_events=late)


def query(data_dir: Path, view: str) -> list[dict[str, Any]]:
    """``fluvial query VIEW --format jsonl``: rows ``{"key", "window", "value"}``."""
    if VIA == "cli":
        return [json.loads(line) for line in cli(data_dir, "query", view, "--format", "jsonl").splitlines()]
    with fluvial.open(data_dir) as ws:
        return [{"key": r.key, "window": list(r.window) if r.window is not None else None, "value": r.value}
                for r in ws.store.query(view)]


def late_events(data_dir: Path, view: str) -> int:
    with fluvial.open(data_dir) as ws:
        return int(ws.store.view(view).late_events)


def run_both(tmp_path: Path, name: str, ingest_args: dict[str, Any], source: Path,
             check: Callable[[str, Path, list[fluvial.RunStats]], None]) -> None:
    for mode in ("batch", "stream"):
        data_dir = tmp_path / f"data-{mode}"
        ingest(data_dir, source, **ingest_args)
        stats = run_example(name, mode, data_dir)
        print(f"{name} {mode} via {VIA}: " + ", ".join(
            f"{s.records_in} records, {s.micro_batches} micro-batches, {s.late_events} late, {s.seconds:.2f} s"
            for s in stats))
        if mode == "stream":
            assert sum(s.micro_batches for s in stats) >= 5, "the stream run was cut into many micro-batches"
        check(mode, data_dir, stats)


def standalone(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- print() output ---------------------------------------------------------------------------

_PAIR = re.compile(r"^\((.*),(-?\d+)\)$")


def parse_prints(text: str) -> list[tuple[int, list[tuple[str, int]], bool]]:
    """``print()`` blocks: (time ms, the (word, count) lines, whether ``...`` followed)."""
    blocks = []
    for block in text.split("-------------------------------------------\nTime: ")[1:]:
        head, _, body = block.partition(" ms\n-------------------------------------------\n")
        lines = body.split("\n\n")[0].splitlines()   # a block ends with a blank line
        more = bool(lines) and lines[-1] == "..."
        pairs = []
        for line in lines[:-1] if more else lines:
            m = _PAIR.match(line)
            assert m, f"not a (word,count) line: {line!r}"
            pairs.append((m.group(1), int(m.group(2))))
        blocks.append((int(head), pairs, more))
    return blocks


# -- the examples ----------------------------------------------------------------------------


@pytest.mark.slow
def test_word_count(tmp_path: Path) -> None:
    rows = gen_lines(tmp_path / "lines.jsonl")
    expected = brute.word_counts(r["text"] for r in rows)

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        got = {r["key"]: r["value"] for r in query(data_dir, "word_counts")}
        assert all(r["window"] is None for r in query(data_dir, "word_counts"))
        assert got == expected, mode

    run_both(tmp_path, "word_count", {"kind": "line", "device_field": "device", "ts_field": "ts"},
             tmp_path / "lines.jsonl", check)
    print(f"word_count: {len(rows)} lines, {sum(expected.values())} words, {len(expected)} distinct")


def test_word_count_standalone(tmp_path: Path) -> None:
    text = tmp_path / "words.txt"
    rng = _rng("words.txt")
    vocab = _vocab(rng, 300)
    lines = [" ".join(rng.choices(vocab, weights=_zipf(300, 1.1), k=12)) for _ in range(2_000)]
    text.write_text("\n".join(lines) + "\n")
    out = standalone("examples/word_count.py", str(text))
    lineage, _, table = out.partition("\n\n")
    assert "ShuffledFlow" in lineage and "reduce_by_key" in lineage and "TextFile" in lineage
    assert "flat_map" in lineage and str(text) in lineage
    expected = sorted(brute.word_counts(lines).items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    got = [(w, int(n)) for n, w in (line.split() for line in table.strip().splitlines())]
    assert got == expected


def _check_per_batch(blocks: list[tuple[int, list[tuple[str, int]], bool]], texts: list[str],
                     start_ms: int, interval_ms: int) -> None:
    expected = brute.per_batch_word_counts([t.splitlines() for t in texts])
    assert [b[0] for b in blocks] == [start_ms + i * interval_ms for i in range(len(texts))]
    for (_, pairs, more), counts in zip(blocks, expected):
        assert len(pairs) == min(10, len(counts))
        assert more == (len(counts) > 10)
        assert len({w for w, _ in pairs}) == len(pairs)
        for word, n in pairs:
            assert counts.get(word) == n, (word, n, counts)


def test_stream_printer(tmp_path: Path) -> None:
    module = load_example("stream_printer")
    texts, start, interval = module["TEXTS"], module["START_MS"], module["INTERVAL_MS"]
    assert any(len(c) > 10 for c in brute.per_batch_word_counts([t.splitlines() for t in texts]))
    # stream mode: one queue batch per micro-batch, printed per batch
    out = io.StringIO()
    stats = run_example("stream_printer", "stream", init_data_dir(tmp_path / "stream"), out=out)
    assert stats[0].micro_batches == len(texts)
    _check_per_batch(parse_prints(out.getvalue()), texts, start, interval)
    # standalone, as the seed's app
    _check_per_batch(parse_prints(standalone("examples/stream_printer.py")), texts, start, interval)
    # batch mode: the three batches in one run, one print, every pair a per-batch count
    out = io.StringIO()
    run_example("stream_printer", "batch", init_data_dir(tmp_path / "batch"), out=out)
    [(time_ms, pairs, more)] = parse_prints(out.getvalue())
    per_batch = brute.per_batch_word_counts([t.splitlines() for t in texts])
    assert time_ms == start and len(pairs) == 10 and more
    assert all(any(c.get(w) == n for c in per_batch) for w, n in pairs)


@pytest.mark.slow
def test_stateful_word_count(tmp_path: Path) -> None:
    rows = gen_lines(tmp_path / "lines.jsonl")
    expected = brute.word_counts(r["text"] for r in rows)

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        got = {r["key"]: r["value"] for r in query(data_dir, "running_word_counts")}
        assert got == expected, mode

    run_both(tmp_path, "stateful_word_count", {"kind": "line", "device_field": "device", "ts_field": "ts"},
             tmp_path / "lines.jsonl", check)


def test_stateful_word_count_prints(tmp_path: Path) -> None:
    """The stream run prints each micro-batch's first 10 (word, running total)."""
    rows = gen_lines(tmp_path / "lines.jsonl", n=3_000)
    data_dir = tmp_path / "data"
    ingest(data_dir, tmp_path / "lines.jsonl", kind="line", device_field="device", ts_field="ts")
    out = io.StringIO()
    [stats] = run_example("stateful_word_count", "stream", data_dir, out=out)
    blocks = parse_prints(out.getvalue())
    assert len(blocks) == stats.micro_batches >= 2
    totals = brute.word_counts(r["text"] for r in rows)
    seen: dict[str, int] = {}
    for _, pairs, _ in blocks:
        assert len(pairs) == 10
        for word, n in pairs:
            assert seen.get(word, 0) < n <= totals[word]   # running totals only grow
            seen[word] = n


def test_stateful_word_count_standalone() -> None:
    module = load_example("stateful_word_count")
    sentences = module["SENTENCES"]
    blocks = parse_prints(standalone("examples/stateful_word_count.py"))
    batches = [[sentences[i % len(sentences)]] for i in range(len(blocks))]
    assert len(blocks) == 6
    expected = brute.running_word_outputs(batches)
    for i, ((time_ms, pairs, more), emitted) in enumerate(zip(blocks, expected)):
        assert time_ms == 1_452_011_283_000 + i * 1000
        assert pairs == emitted[:10] and more == (len(emitted) > 10)


@pytest.mark.slow
def test_hashtag_top10(tmp_path: Path) -> None:
    rows = gen_tweets(tmp_path / "tweets.jsonl")
    expected = brute.hashtag_top10(rows)
    assert len(expected) > 150

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        got = query(data_dir, "hashtag_top10")
        assert all(r["key"] is None for r in got)
        windows = {tuple(r["window"]): r["value"] for r in got}
        assert len(windows) == len(got)
        assert set(windows) == set(expected), mode
        for w, top in expected.items():
            assert windows[w] == top, (mode, w)
        assert sum(s.late_events for s in stats) == 0

    run_both(tmp_path, "hashtag_top10", {"kind": "tweet", "device_field": "user", "ts_field": "ts"},
             tmp_path / "tweets.jsonl", check)
    print(f"hashtag_top10: {len(rows)} tweets, {len(expected)} windows")


@pytest.mark.slow
def test_hashtags_to_store(tmp_path: Path) -> None:
    rows = gen_tweets(tmp_path / "tweets.jsonl")
    expected = brute.hashtag_totals(rows)

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        with fluvial.open(data_dir) as ws:
            table = ws.store.table_rows("hashtag_counts")
        assert all(set(r) == {"hashtag", "count"} for r in table)
        assert len(table) == len(expected)
        assert {r["hashtag"]: r["count"] for r in table} == expected, mode

    run_both(tmp_path, "hashtags_to_store", {"kind": "tweet", "device_field": "user", "ts_field": "ts"},
             tmp_path / "tweets.jsonl", check)


@pytest.mark.slow
def test_device_stats(tmp_path: Path) -> None:
    rows = gen_readings(tmp_path / "readings.jsonl")
    flags = brute.device_late_flags(rows, lateness_ms=30_000)
    n_late = sum(flags)
    assert n_late > 0, "the generated data has late readings"
    assert sum(brute.late_flags(rows, lateness_ms=30_000)) > n_late, "readings behind their partition only"
    everything = brute.device_stats(rows)

    def as_expected(rows_: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
        out = {}
        for r in rows_:
            device, kind = r["key"]
            start, end = r["window"]
            assert end - start == 60_000
            out[(device, kind, start)] = r["value"]
        return out

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        got = as_expected(query(data_dir, "device_stats"))
        want = everything   # a stream run too: late readings correct their windows (device time)
        assert set(got) == set(want), mode
        for k, v in want.items():
            g = got[k]
            assert (g["count"], g["min"], g["max"]) == (v["count"], v["min"], v["max"]), (mode, k)
            assert g["mean"] == pytest.approx(v["mean"], rel=1e-12), (mode, k)
        if mode == "stream":
            assert late_events(data_dir, "device_stats") == n_late
            assert sum(s.late_events for s in stats) == n_late

    run_both(tmp_path, "device_stats", {"kind": "reading", "device_field": "device", "ts_field": "ts"},
             tmp_path / "readings.jsonl", check)
    print(f"device_stats: {len(rows)} readings, {n_late} late, {len(everything)} rows")


@pytest.mark.slow
def test_muvr_classifier(tmp_path: Path) -> None:
    rows = gen_accel(tmp_path / "accel.jsonl")
    centroids = load_example("muvr_classifier")["CENTROIDS"]
    features = brute.exercise_features(rows)
    expected = {}
    for k, x in features.items():
        label, margin = brute.nearest_centroid(x, centroids)
        assert margin > 0.1, f"window {k} is too close to call: regenerate"
        expected[k] = label
    assert len(set(expected.values())) == len(centroids), "every exercise occurs"

    late = sum(brute.device_late_flags([r for r in rows if r["kind"] != "battery"], lateness_ms=2_000))
    assert late > 0, "readings sent late"

    def check(mode: str, data_dir: Path, stats: list[fluvial.RunStats]) -> None:
        got = {(r["key"], r["window"][0]): r["value"] for r in query(data_dir, "exercises")}
        assert all(r["window"][1] - r["window"][0] == 2_000 for r in query(data_dir, "exercises"))
        assert got == expected, mode   # a stream run too: late readings correct their windows
        assert sum(s.late_events for s in stats) == (late if mode == "stream" else 0)
        if mode == "stream":   # a Kappa replay of the log labels exactly the same windows
            cli(data_dir, "reprocess", "exercises", "--from", "earliest", "--flow",
                str(EXAMPLES / "muvr_classifier.py"))
            assert {(r["key"], r["window"][0]): r["value"] for r in query(data_dir, "exercises")} == expected

    run_both(tmp_path, "muvr_classifier", {"kind": "reading", "device_field": "device", "ts_field": "ts"},
             tmp_path / "accel.jsonl", check)
    print(f"muvr_classifier: {len(rows)} readings, {len(expected)} windows classified")


def test_every_example_is_tested() -> None:
    here = Path(__file__).read_text()
    for path in sorted(EXAMPLES.glob("*.py")):
        assert f'"{path.stem}"' in here, f"{path.name} has no test"
        doc = (load_example(path.stem).get("__doc__") or "")
        assert "Shows:" in doc and "Needs:" in doc and "Run:" in doc, f"{path.name}: header docstring"
