"""Device time as a new user meets it (issue 11): ``fluvial generate fleet`` -> ingest ->
``fluvial run examples/device_stats.py --mode stream --until-caught-up`` alone (no batch run),
in one micro-batch and in many, then ``fluvial reprocess --from earliest``; also a ``kappa``
flow, and ``fluvial serve`` with the readings posted in arrival order.

The fleet's readings arrive as devices deliver them: ~10% of the devices go offline for
minutes and flush their backlog later, ~3% of readings come 31-90 s late, one clock runs two
hours ahead.  Every view must be the brute force over *all* readings (``tests/brute.py``,
from the generated file alone), and the late count the readings behind their own device.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fluvial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_proc import EXAMPLES, ServerProcess

import brute

FLUVIAL = str(Path(sys.executable).with_name("fluvial"))
N = 12_000


def cli(data_dir: Path, *args: str) -> str:
    proc = subprocess.run([FLUVIAL, *args, "--data-dir", str(data_dir)], cwd=data_dir.parent,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"fluvial {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def fleet(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    seed = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
    print(f"fleet: seed {seed} (FLUVIAL_TEST_SEED={seed} reproduces it)")
    path = tmp_path / "fleet.jsonl"
    subprocess.run([FLUVIAL, "generate", "fleet", str(N), str(path), "--seed", str(seed)], check=True,
                   capture_output=True, timeout=120)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == N
    return path, rows


def stats_rows(found: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    out = {}
    for r in found:
        device, kind = r["key"]
        out[(device, kind, r["window"][0])] = r["value"]
    return out


def assert_exact(got: dict[tuple[str, str, int], dict[str, Any]], want: dict[tuple[str, str, int], dict[str, Any]],
                 what: str) -> None:
    missing, extra = len(set(want) - set(got)), len(set(got) - set(want))
    assert set(got) == set(want), f"{what}: {missing} windows missing, {extra} extra"
    for k, v in want.items():
        g = got[k]
        assert (g["count"], g["min"], g["max"]) == (v["count"], v["min"], v["max"]), (what, k)
        assert g["mean"] == pytest.approx(v["mean"], rel=1e-12), (what, k)


def query(data_dir: Path, view: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(data_dir, "query", view, "--format", "jsonl").splitlines()]


def late_count(data_dir: Path, view: str) -> int:
    with fluvial.open(data_dir) as ws:
        return int(ws.store.view(view).late_events)


@pytest.mark.parametrize("cut, slices", [([], 1), (["--batch-interval-ms", "50", "--max-batch-records", "400"], 3)],
                         ids=["one-micro-batch", "many-micro-batches-live"])
def test_stream_alone_is_the_brute_force_over_every_reading(tmp_path: Path, cut: list[str], slices: int) -> None:
    """One run over the whole log (history: one micro-batch), and the readings ingested in three
    slices with a run after each (the later ones arrive while the runner is live), in many
    micro-batches."""
    path, rows = fleet(tmp_path)
    want = brute.device_stats(rows)
    late = sum(brute.device_late_flags(rows, lateness_ms=30_000))
    behind_partition = sum(brute.late_flags(rows, lateness_ms=30_000))
    print(f"{len(rows)} readings, {late} late by their device, {behind_partition} behind their partition")
    assert behind_partition > 5 * late > 0, "backlogs a partition watermark would call late"
    data = tmp_path / "data"
    lines = path.read_text().splitlines(keepends=True)
    for i in range(slices):
        part = tmp_path / f"slice-{i}.jsonl"
        part.write_text("".join(lines[i * len(lines) // slices:(i + 1) * len(lines) // slices]))
        cli(data, "ingest", str(part), "--kind", "reading", "--device-field", "device", "--ts-field", "ts")
        out = cli(data, "run", str(EXAMPLES / "device_stats.py"), "--mode", "stream", "--until-caught-up", *cut)
        print(out.strip().splitlines()[-1] if out.strip() else "")
    assert_exact(stats_rows(query(data, "device_stats")), want, "stream")
    assert late_count(data, "device_stats") == late
    # A Kappa reprocess replays the log with nothing late: the same view after the switch.
    cli(data, "reprocess", "device_stats", "--from", "earliest", "--flow", str(EXAMPLES / "device_stats.py"))
    assert_exact(stats_rows(query(data, "device_stats")), want, "after reprocess")


KAPPA_FLOW = '''\
import fluvial

pipeline = fluvial.Pipeline("fleet_sums")
readings = pipeline.from_log("reading").map(lambda e: ((e.device, e.payload["kind"]), e.payload["value"]))
readings.window(fluvial.Tumbling(length_ms=60_000), allowed_lateness_ms=5_000,
                correction_horizon_ms={horizon}).aggregate_by_key(fluvial.Stats()).to_view("fleet_sums")
'''


def test_kappa_flow_reprocess_takes_what_the_live_stream_left_beyond_the_horizon(tmp_path: Path) -> None:
    """A ``kappa`` flow has no batch layer.  What the log holds when a stream runner first starts
    is history, taken whole (the first half here); readings arriving later beyond the correction
    horizon (here 2 minutes, shorter than the offline spells) are left out of the live view, and a
    reprocess of the log brings them back: after the switch the view is the brute force over
    every reading."""
    path, rows = fleet(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_text("".join(lines[:len(lines) // 2]))
    rest.write_text("".join(lines[len(lines) // 2:]))
    flow = tmp_path / "fleet_sums.py"
    flow.write_text(KAPPA_FLOW.format(horizon=120_000))
    data = tmp_path / "data"
    ingest = ["--kind", "reading", "--device-field", "device", "--ts-field", "ts"]
    cli(data, "ingest", str(first), *ingest)
    cli(data, "run", str(flow), "--mode", "stream", "--until-caught-up", "--max-batch-records", "500")
    assert_exact(stats_rows(query(data, "fleet_sums")), brute.device_stats(rows[:len(rows) // 2]), "history")
    cli(data, "ingest", str(rest), *ingest)
    cli(data, "run", str(flow), "--mode", "stream", "--until-caught-up", "--max-batch-records", "500")
    live = stats_rows(query(data, "fleet_sums"))
    want = brute.device_stats(rows)
    with fluvial.open(data) as ws:
        left_out = int(ws.store.view("fleet_sums").late_events)
    print(f"live view: {len(live)} of {len(want)} windows, {left_out} readings counted late")
    assert live != want and left_out > 0, "the live view left the readings beyond the horizon out"
    cli(data, "reprocess", "fleet_sums", "--from", "earliest", "--flow", str(flow))
    assert_exact(stats_rows(query(data, "fleet_sums")), want, "kappa after reprocess")


def test_serve_with_readings_posted_in_arrival_order(tmp_path: Path) -> None:
    _, rows = fleet(tmp_path)
    want = brute.device_stats(rows)
    seqs: dict[str, int] = {}
    events = []
    for r in rows:
        seqs[r["device"]] = seqs.get(r["device"], 0) + 1
        events.append({"device": r["device"], "kind": "reading", "ts": r["ts"], "seq": seqs[r["device"]],
                       "payload": {"kind": r["kind"], "value": r["value"]}})
    with ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"]) as srv:
        for i in range(0, len(events), 500):
            status, body = srv.post_events(events[i:i + 500])
            assert status == 200, body
        srv.wait_caught_up(timeout=60)
        deadline = time.monotonic() + 30
        while True:
            got = stats_rows(srv.get("/v1/views/device_stats")["rows"])
            if got.keys() == want.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert_exact(got, want, "serve")
        listed = srv.get("/v1/devices?limit=100000")["devices"]   # covers every event acknowledged before
        assert sum(d["events"] for d in listed) == len(rows)
        assert len(listed) == len({r["device"] for r in rows})
        assert sum(d["flushes"] for d in listed) > 0   # the offline devices' backlogs
