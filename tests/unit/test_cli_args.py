"""`fluvial query --key K`: a key is strict JSON when it parses as a value a view key can be,
else its text (as the HTTP API reads `key=`): NaN, Infinity and 1e400 are the strings they spell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fluvial as fl
from fluvial.cli.fmt import json_arg


@pytest.mark.parametrize("text, want", [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "1e400"),
    ("5", 5), ("-2.5", -2.5), ('"a b"', "a b"), ("[1, \"x\"]", [1, "x"]), ("null", None),
    ("sensor-1", "sensor-1"), ("[[[", "[[["), ("[" * 100_000, "[" * 100_000),
])
def test_a_key_argument_is_strict_json_or_its_text(text: str, want: object) -> None:
    assert json_arg(text) == want


def test_a_string_key_spelled_like_a_number_constant_is_queried(tmp_path: Path) -> None:
    p = fl.Pipeline("names")
    p.from_log("k").map(lambda e: (e.payload["name"], 1)).reduce_by_key(lambda a, b: a + b).to_view("names")
    with fl.open(tmp_path, writer=True) as ws:
        ws.log.append([fl.Event(device="d", kind="k", ts=i, seq=i, payload={"name": name})
                       for i, name in enumerate(["NaN", "NaN", "Infinity", "5"])])
        ws.batch_runner(workers=1).run(p)
    done = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path), "query", "names",
                           "--key", "NaN", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [(r["key"], r["value"]) for r in json.loads(done.stdout)["rows"]] == [("NaN", 2)]
