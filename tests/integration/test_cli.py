"""The real ``fluvial`` command in subprocesses: ingest -> run -> query, errors, help, env."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

T0 = 1_452_081_600_000  # 2016-01-06T12:00:00Z
MINUTE = 60_000

FLOW = """\
import fluvial

wc = fluvial.Pipeline("wc")
(wc.from_log("tweet")
   .flat_map(lambda e: e.payload["text"].split())
   .window(fluvial.Tumbling(length_ms=60_000))
   .count_by_value()
   .to_view("words"))

totals = fluvial.Pipeline("totals")
totals.from_log("tweet").map(lambda e: (e.device, 1)).reduce_by_key(lambda a, b: a + b).to_view("per_user")
"""


def fluvial_cmd(*args: str, home: Path | None = None, stdin: bytes | None = None,
                cwd: Path | None = None, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "FLUVIAL_HOME"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "fluvial.cli.main"]
    if home is not None:
        argv += ["--data-dir", str(home)]
    if cwd is None:  # never leave a ./.fluvial in the repository
        cwd = home.parent if home is not None else Path(tempfile.gettempdir())
    return subprocess.run(argv + list(args), check=False, input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data dir after `ingest` and `run --mode batch`, with the brute-force answers."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    tmp = tmp_path_factory.mktemp("cli")
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    rows = [{"user": f"u{rng.randrange(5)}", "ts": T0 + rng.randrange(5 * MINUTE),
             "text": " ".join(rng.choices(words, k=rng.randrange(1, 4)))} for _ in range(400)]
    lines = [json.dumps(r) for r in rows] + ['{"user": 1, "ts": 0, "text": "bad"}', "not json"]
    data = tmp / "tweets.jsonl"
    data.write_text("\n".join(lines) + "\n")
    (tmp / "flow.py").write_text(FLOW)
    home = tmp / "home"
    ingest = fluvial_cmd("ingest", str(data), "--kind", "tweet", "--device-field", "user",
                         "--ts-field", "ts", home=home)
    run = fluvial_cmd("run", str(tmp / "flow.py"), "--mode", "batch", home=home)
    expected: Counter[tuple[str, int]] = Counter()
    for r in rows:
        start = (r["ts"] // MINUTE) * MINUTE
        for w in r["text"].split():
            expected[(w, start)] += 1
    return {"tmp": tmp, "home": home, "rows": rows, "ingest": ingest, "run": run,
            "expected": expected, "per_user": Counter(r["user"] for r in rows)}


def test_ingest_reports_counts_and_rejects(world: dict[str, Any]) -> None:
    p = world["ingest"]
    assert p.returncode == 0, p.stderr
    assert "accepted 400, duplicates 0, rejected 2 (see `fluvial log dead-letters`)" in p.stdout
    assert "line 401: $.payload.user" in p.stdout and "line 402: invalid JSON" in p.stdout
    assert "\r" not in p.stderr  # piped: no progress bar
    assert (world["home"] / "log" / "meta.json").exists()  # --data-dir before the subcommand


def test_run_batch_prints_stats(world: dict[str, Any]) -> None:
    p = world["run"]
    assert p.returncode == 0, p.stderr
    assert "wc: 400 records in" in p.stdout and "views: words@v1" in p.stdout
    assert "totals: 400 records in" in p.stdout and "per_user@v1" in p.stdout
    assert "\r" not in p.stderr


def query_jsonl(world: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    p = fluvial_cmd("query", *args, "--format", "jsonl", home=world["home"])
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_query_matches_brute_force(world: dict[str, Any]) -> None:
    got = {(r["key"], r["window"][0]): r["value"] for r in query_jsonl(world, "words")}
    assert got == dict(world["expected"])
    assert all(r["window"][1] - r["window"][0] == MINUTE for r in query_jsonl(world, "words"))
    users = {r["key"]: r["value"] for r in query_jsonl(world, "per_user")}
    assert users == dict(world["per_user"]) and all(
        r["window"] is None for r in query_jsonl(world, "per_user"))


def test_query_key_and_time_filters(world: dict[str, Any]) -> None:
    exp = world["expected"]
    frm, to = T0 + MINUTE, T0 + 3 * MINUTE
    rows = query_jsonl(world, "words", "--key", "beta", "--from", "2016-01-06T12:01:00Z",
                       "--to", str(to))
    assert {(r["key"], r["window"][0]): r["value"] for r in rows} == {
        k: v for k, v in exp.items() if k[0] == "beta" and frm <= k[1] < to}
    p = fluvial_cmd("query", "words", "--key", "gamma", "--format", "json", home=world["home"])
    doc = json.loads(p.stdout)
    assert doc["view"] == "words" and doc["version"] == 1
    assert sum(r["value"] for r in doc["rows"]) == sum(v for k, v in exp.items() if k[0] == "gamma")
    table = fluvial_cmd("query", "words", "--key", "alpha", home=world["home"]).stdout
    assert table.splitlines()[0].split() == ["KEY", "WINDOW", "START", "WINDOW", "END", "VALUE"]
    first = min(k[1] for k in exp if k[0] == "alpha")
    assert "2016-01-06T12:0" in table and str(exp[("alpha", first)]) in table.splitlines()[1]


def test_query_unknown_view_lists_views(world: dict[str, Any]) -> None:
    p = fluvial_cmd("query", "nope", home=world["home"])
    assert p.returncode == 1
    assert p.stderr.startswith("error: ") and "per_user" in p.stderr and "words" in p.stderr
    assert "Traceback" not in p.stderr


def test_reingest_is_refused_and_log_commands(world: dict[str, Any]) -> None:
    home, data = world["home"], world["tmp"] / "tweets.jsonl"
    p = fluvial_cmd("ingest", str(data), "--kind", "tweet", "--device-field", "user",
                    "--ts-field", "ts", home=home)
    assert p.returncode == 1 and "already ingested" in p.stderr and "--force" in p.stderr
    assert p.stdout == ""
    stats = fluvial_cmd("log", "stats", home=home)
    assert stats.returncode == 0
    total = next(line for line in stats.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1] == "400" and "dead letters: 2" in stats.stdout
    tail = fluvial_cmd("log", "tail", "-n", "3", "--kind", "tweet", "--format", "jsonl", home=home)
    assert [json.loads(line)["kind"] for line in tail.stdout.splitlines()] == ["tweet"] * 3
    dl = fluvial_cmd("log", "dead-letters", "-n", "2", home=home)
    assert "invalid JSON" in dl.stdout and "not json" in dl.stdout
    assert "views" not in fluvial_cmd("views", home=home).stderr
    assert "words" in fluvial_cmd("views", home=home).stdout


def test_stream_until_caught_up_and_explain(world: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "s"
    (tmp_path / "a.txt").write_text("x y\nx\n")
    assert fluvial_cmd("ingest", str(tmp_path / "a.txt"), "--kind", "line", home=home).returncode == 0
    (tmp_path / "f.py").write_text(
        "import fluvial\np = fluvial.Pipeline('s')\n"
        "p.from_log('line').flat_map(lambda e: e.payload['text'].split()).count_by_value()"
        ".to_view('w')\n")
    p = fluvial_cmd("run", str(tmp_path / "f.py"), "--mode", "stream", "--until-caught-up",
                    "--batch-interval-ms", "0", "-v", home=home)
    assert p.returncode == 0, p.stderr
    assert "micro-batch 1: 2 records" in p.stderr and "s: 1 micro-batches, 2 records" in p.stdout
    rows = {r["key"]: r["value"] for r in query_jsonl({"home": home}, "w")}
    assert rows == {"x": 2, "y": 1}
    e = fluvial_cmd("explain", str(tmp_path / "f.py"))
    assert e.returncode == 0 and "pipeline s:" in e.stdout and "LogSource" in e.stdout


def test_flow_file_errors(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text("import fluvial\n\nx = 1\nraise RuntimeError('no luck')\n")
    p = fluvial_cmd("run", str(tmp_path / "boom.py"), "--mode", "batch", home=tmp_path / "h")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "boom.py, line 4: RuntimeError: no luck" in p.stderr
    p = fluvial_cmd("--debug", "run", str(tmp_path / "boom.py"), "--mode", "batch",
                    home=tmp_path / "h")
    assert p.returncode == 1 and "Traceback" in p.stderr
    (tmp_path / "empty.py").write_text("import fluvial\n")
    p = fluvial_cmd("explain", str(tmp_path / "empty.py"))
    assert p.returncode == 1 and "defines no pipeline" in p.stderr and "fluvial.Pipeline(" in p.stderr


@pytest.mark.parametrize("args, message", [
    (["bogus"], "invalid choice"),
    (["ingest", "f.txt"], "--kind"),
    (["query", "v", "--from", "yesterday"], "--from"),
    (["run", "f.py"], "--mode"),
    (["schema", "add", "k", "--field", "nocolon"], "NAME:TYPE"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    p = fluvial_cmd(*args, home=tmp_path)
    assert p.returncode == 2 and message in p.stderr and "usage:" in p.stderr


def test_failures_exit_1(tmp_path: Path) -> None:
    p = fluvial_cmd("ingest", str(tmp_path / "missing.txt"), "--kind", "line", home=tmp_path)
    assert p.returncode == 1 and p.stderr.startswith("error: cannot read")
    p = fluvial_cmd("ingest", "-", "--kind", "nokind", home=tmp_path, stdin=b"a\n")
    assert p.returncode == 1 and "registered: line, reading, tweet" in p.stderr


SUBCOMMANDS = {
    ("ingest",): ["--kind", "--device-field", "--ts-field", "--seq-field", "FLUVIAL_HOME"],
    ("run",): ["--mode", "--until-caught-up", "--batch-interval-ms", "--max-batch-records",
               "--workers"],
    ("explain",): ["FLOW_FILE"],
    ("query",): ["--key", "--from", "--to", "--format"],
    ("views",): ["example"],
    ("log", "stats"): ["example"],
    ("log", "tail"): ["-n", "--kind", "--format"],
    ("log", "dead-letters"): ["-n"],
    ("log", "verify"): ["--format", "example", "fluvial log salvage"],
    ("log", "salvage"): ["--dry-run", "log-quarantine", "example"],
    ("generate",): ["tweets", "readings", "words", "lines", "accel", "--seed"],
    ("token", "create"): ["--device", "--read", "--admin", "--expires-in"],
    ("serve",): ["--tls-cert", "--tls-key", "--flow", "--kappa", "--speed-layer"],
    ("worker",): ["--pipeline", "--batch-interval-ms", "--max-batch-records", "--lease-ms", "refused",
                  "fluvial run --mode", "example"],
    ("schema", "list"): ["example"],
    ("schema", "add"): ["--field", "--version"],
    ("log",): ["stats", "tail", "dead-letters", "verify", "salvage"],
    ("schema",): ["list", "add"],
    (): ["--data-dir", "[env: FLUVIAL_HOME]", "--version", "ingest", "query", "generate"],
}


@pytest.mark.parametrize("words", list(SUBCOMMANDS), ids=lambda w: " ".join(w) or "fluvial")
def test_help_of_every_subcommand(words: tuple[str, ...]) -> None:
    p = fluvial_cmd(*words, "--help")
    assert p.returncode == 0, p.stderr
    for option in SUBCOMMANDS[words]:
        assert option in p.stdout, option


def test_fluvial_home_and_stdin_and_schema(tmp_path: Path) -> None:
    home = tmp_path / "via-env"
    env = {"FLUVIAL_HOME": str(home)}
    p = fluvial_cmd("ingest", "-", "--kind", "line", stdin=b"one\ntwo\n", env=env, cwd=tmp_path)
    assert p.returncode == 0 and "accepted 2" in p.stdout
    assert (home / "log" / "meta.json").exists() and not (tmp_path / ".fluvial").exists()
    tail = fluvial_cmd("log", "tail", "--format", "jsonl", env=env)
    assert [json.loads(line)["device"] for line in tail.stdout.splitlines()] == ["stdin"] * 2
    assert fluvial_cmd("schema", "add", "ping", "--field", "rtt:float", env=env).returncode == 0
    bad = fluvial_cmd("schema", "add", "ping", "--field", "rtt:int", env=env)
    assert bad.returncode == 1 and "incompatible" in bad.stderr
    listed = fluvial_cmd("schema", "list", env=env).stdout
    assert "ping" in listed and "rtt: float" in listed and "tweet" in listed
    assert fluvial_cmd("--version").stdout.startswith("fluvial ")
