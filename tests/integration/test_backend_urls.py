"""Backends chosen by URL: `--log URL` / `--store URL` (env FLUVIAL_LOG / FLUVIAL_STORE,
`log_url` / `store_url` in fluvial.toml) work everywhere the defaults do, and put the log and
the store where they say; a bad URL is a clear error.

The same workload runs twice -- once with the defaults, once with the log and the store
outside the data directory -- and every answer (query, views, log stats, a Parquet export
read back, a served view) must be the same."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_proc import EXAMPLES, ServerProcess

import fluvial
from fluvial.backends import LogSpec, open_log, open_store, spec_of
from fluvial.errors import ConfigError

SEED = int(os.environ.get("FLUVIAL_URLS_SEED") or random.randrange(2**32))


def fluvial_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "fluvial.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def session(tmp_path: Path, flags: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """generate, ingest, batch and stream runs, queries: everything a user sees."""
    data = ["--data-dir", str(tmp_path / "data"), *flags]
    tmp_path.mkdir(parents=True, exist_ok=True)
    readings = tmp_path / "readings.jsonl"
    if not readings.exists():
        fluvial_cli("generate", "readings", "4000", str(readings), "--seed", str(SEED))
    fluvial_cli(*data, "ingest", str(readings), "--kind", "reading", "--device-field", "device",
                "--ts-field", "ts", env=env)
    flow = str(EXAMPLES / "device_stats.py")
    fluvial_cli(*data, "run", flow, "--mode", "stream", "--until-caught-up", env=env)
    streamed = json.loads(fluvial_cli(*data, "query", "device_stats", "--format", "json", env=env))
    fluvial_cli(*data, "run", flow, "--mode", "batch", "--workers", "1", env=env)
    batch = json.loads(fluvial_cli(*data, "query", "device_stats", "--format", "json", env=env))
    views = [line.split()[:4] for line in fluvial_cli(*data, "views", env=env).splitlines()]
    stats = [line.split()[:3] for line in fluvial_cli(*data, "log", "stats", env=env).splitlines()]
    export = tmp_path / "export"
    fluvial_cli(*data, "log", "export", "--format", "parquet", str(export), env=env)
    again = ["--data-dir", str(tmp_path / "from-export")]
    if flags:   # the batch layer over the export, into a store elsewhere
        again += ["--store", f"sqlite://{tmp_path / 'export-views' / 'views.db'}"]
    fluvial_cli(*again, "run", flow, "--mode", "batch", "--from-export", str(export))
    from_export = json.loads(fluvial_cli(*again, "query", "device_stats", "--format", "json"))
    return {"streamed": streamed, "batch": batch, "views": views, "stats": stats, "from_export": from_export}


@pytest.mark.slow
@pytest.mark.serial
def test_the_log_and_the_store_where_the_urls_say_answer_as_the_defaults(tmp_path: Path) -> None:
    print(f"seed={SEED}")
    defaults = session(tmp_path / "defaults", [])
    elsewhere = tmp_path / "elsewhere"
    log_dir, store_file = tmp_path / "volumes" / "log", tmp_path / "volumes" / "db" / "views.db"
    spelled = session(elsewhere, ["--log", f"file://{log_dir}", "--store", f"sqlite://{store_file}"])
    assert spelled == defaults
    assert (log_dir / "meta.json").exists() and store_file.exists()
    assert not (elsewhere / "data" / "log").exists() and not (elsewhere / "data" / "views.db").exists()
    # the same through the environment, and spelled out at the default places
    env = {"FLUVIAL_LOG": f"file://{tmp_path / 'env' / 'log'}",
           "FLUVIAL_STORE": f"sqlite://{tmp_path / 'env' / 'views.db'}"}
    assert session(tmp_path / "by-env", [], env=env) == defaults
    assert (tmp_path / "env" / "log" / "meta.json").exists()
    home = tmp_path / "explicit" / "data"
    explicit = session(tmp_path / "explicit", ["--log", f"file://{home / 'log'}",
                                                "--store", f"sqlite://{home / 'views.db'}"])
    assert explicit == defaults
    # {data_dir} stands for the data directory: one setting for every directory
    env = {"FLUVIAL_LOG": "file://{data_dir}/volumes/log", "FLUVIAL_STORE": "sqlite://{data_dir}/db/v.db"}
    assert session(tmp_path / "template", [], env=env) == defaults
    data = tmp_path / "template" / "data"
    assert (data / "volumes" / "log" / "meta.json").exists() and (data / "db" / "v.db").exists()
    assert not (data / "log").exists() and not (data / "views.db").exists()


@pytest.mark.slow
def test_serve_with_urls_from_its_config_file(tmp_path: Path) -> None:
    log_dir, store_file = tmp_path / "v" / "log", tmp_path / "v" / "views.db"
    config = f'log_url = "file://{log_dir}"\nstore_url = "sqlite://{store_file}"\n'
    server = ServerProcess(tmp_path, flows=[EXAMPLES / "device_stats.py"], config=config)
    for name in ("FLUVIAL_LOG", "FLUVIAL_STORE"):   # the config file's URLs (the environment would win)
        server.env.pop(name, None)
    with server as srv:
        events = [{"device": f"d{i % 5}", "kind": "reading", "ts": 1_700_000_000_000 + 1_000 * i, "seq": i,
                   "payload": {"kind": "temp", "value": float(i)}} for i in range(200)]
        status, body = srv.post_events(events)
        assert status == 200 and body["accepted"] == 200, body
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = srv.get("/v1/views/device_stats")["rows"]
            if sum(r["value"]["count"] for r in rows) == 200:   # every event once
                break
            time.sleep(0.05)
        assert sum(r["value"]["count"] for r in rows) == 200, rows
        status, job = srv.admin("POST", "/v1/views/device_stats/batch")   # the batch child gets the URLs
        assert status == 202, job
        assert srv.wait_job(job["id"])["status"] == "done"
        assert sum(r["value"]["count"] for r in srv.get("/v1/views/device_stats")["rows"]) == 200
    assert (log_dir / "meta.json").exists() and store_file.exists()
    assert not (srv.data_dir / "log").exists() and not (srv.data_dir / "views.db").exists()


@pytest.mark.parametrize("url, message", [
    ("kafka://127.0.0.1:9092/events", "no log backend for 'kafka://'"),
    ("nats://127.0.0.1:4222/a.b", "must be 1 to 64 letters"),
    ("/var/lib/fluvial/log", "is not a log URL: write SCHEME://PATH"),
    ("file://", "names no path"),
])
def test_a_bad_log_url_says_what_is_wrong(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        open_log(url)
    done = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path), "--log", url,
                           "log", "stats"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_bad_store_url_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no store backend for 'mongodb://'"):
        open_store("mongodb://localhost/test")
    with pytest.raises(ConfigError, match="is a directory; name the SQLite file"):
        open_store(f"sqlite://{tmp_path}")
    with pytest.raises(ConfigError, match="a Parquet export is read only"):
        open_log(f"parquet://{tmp_path}")
    (tmp_path / "fluvial.toml").write_text('store_url = "views.db"\n')
    done = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "serve", "--config",
                           str(tmp_path / "fluvial.toml"), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "fluvial.toml" in done.stderr and "store URL" in done.stderr, done.stderr


def test_a_log_spec_opens_the_same_log_in_another_process(tmp_path: Path) -> None:
    with fluvial.open(tmp_path / "d", writer=True) as ws:
        ws.log.append([fluvial.Event(device="d", kind="k", ts=i, seq=i, payload={"i": i}) for i in range(10)])
        spec = spec_of(ws.log)
        assert isinstance(spec, LogSpec) and spec.url == ws.log_url and spec.readonly
        code = ("import pickle, sys; spec = pickle.loads(bytes.fromhex(sys.argv[1])); log = spec.open(); "
                "print(sum(log.end_offsets()) - sum(log.start_offsets())); log.close()")
        done = subprocess.run([sys.executable, "-c", code, pickle.dumps(spec).hex()], capture_output=True,
                              text=True, timeout=60)
        assert done.stdout.strip() == "10", done.stderr
