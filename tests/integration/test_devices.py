"""The device table (issue 11 item 5): ``fluvial devices``, ``GET /v1/devices``, exactly once.

Devices are simulated as they behave: offline spells flushed later in their own order, a
few events sent out of order, one clock two hours ahead, retries.  The expected table is a
brute force over what the log holds (each event with the time the log stored it, read
back), written apart from :mod:`fluvial.layers.devices`.  Trackers run on every store kind,
two at once stepping in turn (each commit of one fences the other's next), and as real
``fluvial devices`` processes killed with SIGKILL at random moments while rivals run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fluvial
from device_time_world import AHEAD, device_events, now_start
from fluvial import Event, LogConfig
from fluvial.backends import open_store
from fluvial.layers.devices import DeviceTracker, list_devices

PARTITIONS = 3


def make_fleet(seed: int, n: int, devices: int = 12) -> list[Event]:
    """Readings of the last hour as devices deliver them (tests/device_time_world.py: offline
    spells flushed later, 5% sent late, dev-000's clock 2 h ahead), ~3% of them sent twice."""
    rnd = random.Random(seed)
    events, _ = device_events(rnd, n=n, devices=devices, ahead=1, behind_ms=0, offline=0.05, late=0.05,
                              start_ms=now_start(), step_ms=2_000)
    out: list[Event] = []
    for e in events:
        out.append(e)
        if rnd.random() < 0.03:
            out.append(e)   # a retry: the log keeps one
    return out


def brute_table(log: Any) -> dict[str, dict[str, Any]]:
    """Per device, from the log read back: the definitions of ``fluvial devices --help``."""
    out: dict[str, dict[str, Any]] = {}
    for p in range(log.partitions):
        offset, end = log.start_offsets()[p], log.end_offsets()[p]
        while offset < end:
            batch = log.read(p, offset)
            for e, arrived in zip(batch.events, batch.append_ms):
                r = out.setdefault(e.device, {"device": e.device, "partition": p, "events": 0,
                                              "first_seen_ms": arrived, "last_seen_ms": arrived,
                                              "last_event_ms": None, "late": 0, "future": 0, "flushes": 0,
                                              "lagging": False})
                r["events"] += 1
                r["last_seen_ms"] = max(r["last_seen_ms"], arrived)
                if e.ts - arrived > 5 * 60_000:
                    r["future"] += 1
                    continue
                if r["last_event_ms"] is not None and r["last_event_ms"] - e.ts > 30_000:
                    r["late"] += 1
                behind = arrived - e.ts > 60_000
                r["flushes"] += behind and not r["lagging"]
                r["lagging"] = behind
                r["last_event_ms"] = e.ts if r["last_event_ms"] is None else max(r["last_event_ms"], e.ts)
            offset = batch.next_offset
    return out


def without_quiet(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["device"]: {k: v for k, v in r.items() if k != "quiet"} for r in rows}


def test_two_trackers_in_turn_give_the_brute_force_on_every_store(tmp_path: Path, store_url: str) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    events = make_fleet(seed, 600)
    with fluvial.open(tmp_path / "data", writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
        log = ws.log
        store_a, store_b = open_store(store_url), open_store(store_url)
        try:
            trackers = [DeviceTracker(log, store_a, max_records=rnd.randint(5, 60)),
                        DeviceTracker(log, store_b, max_records=rnd.randint(5, 60))]
            for i in range(0, len(events), 150):   # the log grows while they follow it
                log.append(events[i:i + 150])
                for _ in range(rnd.randint(1, 6)):
                    rnd.choice(trackers).step()
            for t in trackers:
                t.catch_up()
            want = brute_table(log)
            assert len(want) == 12 and want["dev-000"]["future"] == want["dev-000"]["events"] > 0
            assert sum(r["flushes"] for r in want.values()) > 0 and sum(r["late"] for r in want.values()) > 0
            got = list_devices(store_a, quiet_after_ms=10 * 60_000)
            assert without_quiet(got) == want
            assert not any(r["quiet"] for r in got)
            assert all(r["quiet"] for r in list_devices(store_b, now_ms=int(time.time() * 1000) + 11 * 60_000))
        finally:
            store_a.close()
            store_b.close()


def _devices_cli(data: Path, *args: str, capture: bool = True) -> subprocess.Popen[str]:
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-W", "error", "-m", "fluvial.cli.main", "--data-dir", str(data),
                             "devices", *args], stdout=out, stderr=out, text=True)


def test_devices_killed_at_random_moments_with_rivals_count_each_event_once(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    data = tmp_path / "data"
    with fluvial.open(data, writer=True, log_config=LogConfig(partitions=PARTITIONS, fsync="never")) as ws:
        ws.log.append(make_fleet(seed, 3000, devices=30))
    kills = 0
    for _ in range(5):
        procs = [_devices_cli(data, "--max-records", str(rnd.randint(3, 40)), capture=False) for _ in range(2)]
        time.sleep(rnd.uniform(0.3, 1.5))
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        for p in procs:
            p.wait(timeout=60)
    final = _devices_cli(data, "--format", "json")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    print(f"kills={kills}")
    with fluvial.open(data) as ws:
        want = brute_table(ws.log)
    assert without_quiet(json.loads(out)["devices"]) == want


def test_devices_cli_table_help_and_bad_arguments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with fluvial.open(data, writer=True, log_config=LogConfig(partitions=1, fsync="never")) as ws:
        ws.log.append(make_fleet(7, 200, devices=3))
    table = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "devices"],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "PARTITION", "EVENTS"] and len(lines) == 1 + 3
    quiet = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "devices", "--quiet"],
                           capture_output=True, text=True, timeout=60)
    assert quiet.stdout.strip() == "(no quiet devices)"
    helped = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "devices", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "backlogs flushed" in helped.stdout and "--quiet-after" in helped.stdout
    for bad in (["--quiet-after", "ten minutes"], ["--quiet-after", "10"], ["--quiet-after", "-5m"],
                ["--max-records", "0"], ["--format", "xml"]):
        r = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(data), "devices", *bad],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "error" in r.stderr.lower(), (bad, r.stderr)
    missing = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path / "nope"),
                              "devices"], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "nope" in missing.stderr


BAD_QUERIES = ["quiet=maybe", "quiet_after=-1", "quiet_after=abc", "limit=0", "limit=100001", "limit=" + "9" * 40,
               "color=red", "quiet_after=1e3"]


def test_devices_api_follows_the_log_and_refuses_bad_parameters(tmp_path: Path) -> None:
    from server_proc import ServerProcess

    srv = ServerProcess(tmp_path)
    with fluvial.open(srv.data_dir, writer=True, log_config=LogConfig(partitions=2, fsync="never")) as ws:
        ws.log.append(make_fleet(3, 300, devices=5))
    with srv:
        # Read-your-writes: an answer covers every event the log held when the request came.
        first = srv.get("/v1/devices")
        with fluvial.open(srv.data_dir) as ws:
            want = brute_table(ws.log)
        assert first["caught_up"] is True and without_quiet(first["devices"]) == want
        # events posted now are in the next answer (a new device, with a clock ahead)
        now = int(time.time() * 1000)
        status, body = srv.post_events([{"device": "late-comer", "kind": "reading", "ts": now + AHEAD, "seq": 1,
                                         "payload": {"kind": "temp", "value": 2.5}}])
        assert status == 200, body
        late_comer = srv.get("/v1/devices?prefix=late")["devices"]
        assert [(d["device"], d["events"], d["future"]) for d in late_comer] == [("late-comer", 1, 1)]
        page = srv.get("/v1/devices?limit=2&after=dev-001")
        assert [d["device"] for d in page["devices"]] == ["dev-002", "dev-003"] and page["more"] is True
        assert srv.get("/v1/devices?quiet=true")["devices"] == []
        assert len(srv.get("/v1/devices?quiet=true&quiet_after=1")["devices"]) == 6
        metrics = srv.request("GET", "/metrics")[1].decode()
        assert 'fluvial_devices{state="active"} 6' in metrics and "fluvial_device_future_events_total" in metrics
        assert srv.get("/v1/metrics")["devices"]["future_events"] == want["dev-000"]["future"] + 1
        for query in BAD_QUERIES:
            status, raw = srv.request("GET", f"/v1/devices?{query}")
            assert status == 400 and "error" in json.loads(raw), (query, raw)
