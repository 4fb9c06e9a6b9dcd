"""``fluvial.generate`` and ``fluvial generate``: the workloads, byte for byte, and the CLI's errors.

The benchmark kinds are compared with ``gen.py``, the script the published
figures were measured with, kept below as plain reference code (and, where
the original is next to the repository, with the original itself).  The other
checks use a printed random seed (``FLUVIAL_TEST_SEED=<n>`` reproduces a run).
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fluvial.cli import generate as cli_generate
from fluvial.cli.main import main
from fluvial.events import SchemaRegistry
from fluvial.generate import KINDS, MAX_MIB, MAX_RECORDS, generate, write

ORIGINAL_GEN = Path(__file__).resolve().parents[3] / "shared" / "bench" / "gen.py"


# -- gen.py, the reference (as it was, minus the CLI) ------------------------------------------

def _ref_vocab(rng: random.Random, n: int = 50_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) + str(i % 7) for i in range(n)]


def _ref_zipf(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / (r ** s) for r in range(1, n + 1)]


def ref_words(mb: int, out: io.StringIO, seed: int = 42) -> None:
    rng = random.Random(seed)
    v = _ref_vocab(rng)
    w = _ref_zipf(len(v))
    target, size = mb * 1024 * 1024, 0
    while size < target:
        chunk = rng.choices(v, weights=w, k=12 * 1000)
        s = "\n".join(" ".join(chunk[i:i + 12]) for i in range(0, len(chunk), 12)) + "\n"
        out.write(s)
        size += len(s)


def ref_tweets(n: int, out: io.StringIO, seed: int = 7) -> None:
    rng = random.Random(seed)
    v = _ref_vocab(rng, 5_000)
    tags = ["#" + t for t in _ref_vocab(random.Random(seed + 1), 2_000)]
    tw, ww = _ref_zipf(len(tags), 1.2), _ref_zipf(len(v))
    t0 = 1_452_124_400_000
    for i in range(0, n, 1000):
        body = rng.choices(v, weights=ww, k=8 * 1000)
        ht = rng.choices(tags, weights=tw, k=2 * 1000)
        rows = []
        for j in range(min(1000, n - i)):
            text = " ".join(body[j * 8:(j + 1) * 8] + ht[j * 2:(j + 1) * 2])
            rows.append(json.dumps({"ts": t0 + i + j, "user": f"u{rng.randrange(100_000)}", "text": text}))
        out.write("\n".join(rows) + "\n")


def ref_readings(n: int, out: io.StringIO, seed: int = 11) -> None:
    rng = random.Random(seed)
    kinds = ["temp", "humidity", "accel_x", "accel_y", "accel_z", "battery"]
    for k in range(n):
        ts = 1_700_000_000_000 + k // 10
        if rng.random() < 0.01:
            ts -= rng.randrange(30_000)
        out.write(json.dumps({"device": f"dev-{rng.randrange(10_000):05d}", "ts": ts,
                              "kind": rng.choice(kinds), "value": round(rng.gauss(20, 5), 3)}) + "\n")


REFERENCE = {"words": ref_words, "tweets": ref_tweets, "readings": ref_readings}


def produced(kind: str, n: int, seed: int | None = None) -> bytes:
    out = io.BytesIO()
    written = write(kind, n, out, seed=seed)
    data = out.getvalue()
    assert written.bytes == len(data) and written.records == data.count(b"\n")
    return data


def reference(kind: str, n: int, seed: int | None = None) -> bytes:
    out = io.StringIO()
    REFERENCE[kind](n, out) if seed is None else REFERENCE[kind](n, out, seed)
    return out.getvalue().encode()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**31)))
    print(f"seed {value} (FLUVIAL_TEST_SEED={value} reproduces it)")
    return value


# -- the benchmark workloads are unchanged -------------------------------------------------------

@pytest.mark.parametrize("kind, n", [("tweets", 1), ("tweets", 2_345), ("tweets", 3_000),
                                     ("readings", 1), ("readings", 10_000), ("readings", 23_456),
                                     ("words", 1)])
def test_default_seeds_give_the_bytes_of_gen_py(kind: str, n: int) -> None:
    assert produced(kind, n) == reference(kind, n)


@pytest.mark.parametrize("kind", ["tweets", "readings", "words"])
def test_any_seed_gives_the_bytes_of_gen_py_with_that_seed(kind: str, seed: int) -> None:
    n = 1 if kind == "words" else 1_500
    assert produced(kind, n, seed) == reference(kind, n, seed)


@pytest.mark.skipif(not ORIGINAL_GEN.exists(), reason=f"the original gen.py is not at {ORIGINAL_GEN}")
@pytest.mark.parametrize("kind, n", [("tweets", 1_234), ("readings", 12_345), ("words", 1)])
def test_the_original_gen_py_agrees(kind: str, n: int, tmp_path: Path) -> None:
    out = tmp_path / "ref"
    subprocess.run([sys.executable, str(ORIGINAL_GEN), kind, str(n), str(out)], check=True, timeout=120)
    assert produced(kind, n) == out.read_bytes()


# -- every kind: deterministic, the shape it claims ---------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
def test_deterministic_and_seeded(kind: str, seed: int) -> None:
    n = 1 if kind == "words" else 1_200
    first = produced(kind, n, seed)
    assert produced(kind, n, seed) == first
    assert produced(kind, n, seed + 2) != first
    assert produced(kind, n) == produced(kind, n, KINDS[kind].default_seed)


@pytest.mark.parametrize("kind", list(KINDS))
def test_help_example_is_the_first_line(kind: str) -> None:
    assert next(generate(kind, 1)) == KINDS[kind].example
    assert KINDS[kind].example in cli_generate._DESCRIPTION


def _records(kind: str, n: int, seed: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in produced(kind, n, seed).decode().splitlines()]


def test_words_is_n_mib_in_whole_blocks_of_1000_lines(seed: int) -> None:
    data = produced("words", 2, seed)
    lines = data.decode().splitlines()
    assert len(data) >= 2 * 1024 * 1024 and len(lines) % 1000 == 0
    assert len(data) - len("\n".join(lines[-1000:]) + "\n") < 2 * 1024 * 1024   # one block more at most
    assert all(len(line.split(" ")) == 12 for line in lines)
    counts = Counter(w for line in lines for w in line.split(" "))
    assert len(counts) > 10_000 and counts.most_common(1)[0][1] > 20 * len(lines) * 12 / len(counts)  # Zipf


def test_tweets_shape(seed: int) -> None:
    rows = _records("tweets", 2_500, seed)
    assert [r["ts"] for r in rows] == list(range(1_452_124_400_000, 1_452_124_400_000 + 2_500))
    for r in rows:
        assert set(r) == {"ts", "user", "text"} and r["user"].startswith("u")
        words = r["text"].split(" ")
        assert len(words) == 10 and [w.startswith("#") for w in words] == [False] * 8 + [True] * 2


def test_readings_shape(seed: int) -> None:
    rows = _records("readings", 20_000, seed)
    late = 0
    for k, r in enumerate(rows):
        assert set(r) == {"device", "ts", "kind", "value"} and isinstance(r["value"], float)
        on_time = 1_700_000_000_000 + k // 10
        assert on_time - 30_000 < r["ts"] <= on_time
        late += r["ts"] < on_time
    assert 0 < late < 0.03 * len(rows)


def test_lines_shape_and_vocabulary(seed: int) -> None:
    rows = _records("lines", 3_000, seed)
    vocab = set(_ref_vocab(random.Random(seed)))     # the vocabulary of gen.py's words
    assert [r["ts"] for r in rows] == [1_452_011_283_000 + 100 * i for i in range(3_000)]
    sizes: Counter[int] = Counter()
    for r in rows:
        assert set(r) == {"device", "ts", "text"} and r["device"].startswith("dev-")
        words = r["text"].split(" ")
        sizes[len(words)] += 1
        assert set(words) <= vocab
    assert set(sizes) == set(range(1, 15))


def test_accel_shape_for_the_muvr_example(seed: int) -> None:
    n = 4_321
    rows = _records("accel", n, seed)
    assert len(rows) == n
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)          # event time never goes back
    assert {r["device"] for r in rows} == {f"watch-{d}" for d in range(8)}
    assert {r["kind"] for r in rows} == {"accel_x", "accel_y", "accel_z", "battery"}
    per_axis = Counter((r["device"], r["kind"]) for r in rows if r["kind"] != "battery")
    assert max(per_axis.values()) - min(per_axis.values()) <= 1             # 10 Hz on every axis
    ticks = {r["ts"] for r in rows}
    assert {t % 100 for t in ticks} == {0}                                  # 10 Hz
    z = [r["value"] for r in rows if r["kind"] == "accel_z"]
    assert abs(sum(z) / len(z) - 9.8) < 0.5                                 # gravity on z


@pytest.mark.parametrize("kind", list(KINDS))
def test_records_are_valid_events_of_their_kind(kind: str, seed: int) -> None:
    registry = SchemaRegistry.with_builtins()
    if kind == "words":   # plain text: `fluvial ingest` makes each line a {"text": line} event of kind line
        for i, line in enumerate(produced("words", 1, seed).decode().splitlines()[:500]):
            registry.validate({"device": "words", "kind": "line", "ts": i, "seq": i, "payload": {"text": line}})
        return
    event_kind = {"tweets": "tweet", "readings": "reading", "fleet": "reading", "lines": "line",
                  "accel": "reading"}[kind]
    device = "user" if kind == "tweets" else "device"
    for i, r in enumerate(_records(kind, 500, seed)):
        registry.validate({"device": str(r[device]), "kind": event_kind, "ts": r["ts"], "seq": i, "payload": r})


def test_generate_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown kind 'tweet': choose among tweets, readings"):
        generate("tweet", 3)
    for bad in (0, -1, MAX_RECORDS + 1, 2.5, True):
        with pytest.raises(ValueError, match="N counts tweets: a whole number from 1 to"):
            generate("tweets", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N counts MiB"):
        generate("words", MAX_MIB + 1)


# -- the command -----------------------------------------------------------------------------------

def run_cli(*args: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        try:
            code = main(["generate", *args])
        except SystemExit as exc:   # argparse: usage errors
            code = int(exc.code or 0)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_file_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                seed: int) -> None:
    code, out, err = run_cli("tweets", "1500", "my tweets.jsonl", "--seed", str(seed), cwd=tmp_path,
                             capsys=capsys)
    assert code == 0, err
    data = (tmp_path / "my tweets.jsonl").read_bytes()
    assert data == reference("tweets", 1_500, seed)
    assert f"wrote 1,500 tweets ({len(data) / 1e6:.1f} MB, seed {seed}) to my tweets.jsonl" in out
    assert "next: fluvial ingest 'my tweets.jsonl' --kind tweet --device-field user --ts-field ts" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my tweets.jsonl"]   # no temporary file left
    assert oct((tmp_path / "my tweets.jsonl").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_replaces_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.jsonl").write_text("old\n" * 100_000)
    assert run_cli("readings", "7", "r.jsonl", cwd=tmp_path, capsys=capsys)[0] == 0
    assert (tmp_path / "r.jsonl").read_bytes() == reference("readings", 7)


def test_cli_writes_stdout_with_dash_and_stops_quietly_in_a_pipe(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "fluvial.cli.main", "generate", "readings", "2345", "-"]
    full = subprocess.run(cmd, capture_output=True, timeout=60, cwd=tmp_path)
    assert full.returncode == 0 and full.stdout == reference("readings", 2_345)
    assert full.stderr.decode().startswith("wrote 2,345 readings") and list(tmp_path.iterdir()) == []
    head = subprocess.run(" ".join(cmd[:-3]) + " readings 500000 - | head -n 2", shell=True,
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert head.returncode == 0 and head.stdout == reference("readings", 2) and b"Traceback" not in head.stderr


@pytest.mark.parametrize("args, message", [
    (["tweets", "0", "f"], "argument N: must be >= 1, got 0"),
    (["tweets", "-5", "f"], "argument N: must be >= 1, got -5"),
    (["tweets", "abc", "f"], "argument N: expected a whole number >= 1, got 'abc'"),
    (["tweets", "2.5", "f"], "argument N: expected a whole number >= 1, got '2.5'"),
    (["tweet", "5", "f"], "argument KIND: invalid choice: 'tweet' (choose from 'tweets', 'readings', "
                          "'fleet', 'words', 'lines', 'accel')"),
    (["tweets", "5"], "the following arguments are required: FILE"),
    (["tweets", "5", "f", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
])
def test_cli_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(*args, cwd=tmp_path, capsys=capsys)
    assert code == 2 and err.splitlines()[-1] == f"fluvial generate: error: {message}", err
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["tweets", str(MAX_RECORDS + 1), "f"],
     f"error: N is too large for tweets: at most {MAX_RECORDS:,} tweets, got {MAX_RECORDS + 1:,}; "
     "write several files with different --seed instead"),
    (["words", str(MAX_MIB + 1), "f"], f"error: N is too large for words: at most {MAX_MIB:,} MiB"),
    (["tweets", "5", "no/such/dir/f"], "error: cannot write no/such/dir/f: No such file or directory "
                                       "(no/such/dir); give a path in an existing directory"),
    (["tweets", "5", "afile/f"], "error: cannot write afile/f: Not a directory (afile); give a path"),
    (["tweets", "5", "adir"], "error: cannot write adir: it is a directory; give a file name, or - for stdout"),
    (["tweets", "5", ""], "error: FILE is empty: give a file name, or - for stdout"),
])
def test_cli_failures_exit_1_with_one_line(args: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("keep\n")
    (tmp_path / "adir").mkdir()
    code, out, err = run_cli(*args, cwd=tmp_path, capsys=capsys)
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith(message), err
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    assert (tmp_path / "afile").read_text() == "keep\n" and list((tmp_path / "adir").iterdir()) == []


@pytest.mark.parametrize("failure, code, message", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(28, "No space left on device"), 1,
     "error: cannot write r.jsonl: No space left on device; free some space or choose another FILE"),
])
def test_cli_failing_midway_leaves_the_old_file_and_no_partial_one(
        failure: BaseException, code: int, message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r.jsonl").write_text("old\n")
    real_write = cli_generate.write

    def failing_write(kind: str, n: int, out: Any, **kw: Any) -> Any:
        real_write(kind, 5_000, out, **kw)     # some bytes are written, then it fails
        raise failure

    monkeypatch.setattr(cli_generate, "write", failing_write)
    got, out, err = run_cli("readings", "10000", "r.jsonl", cwd=tmp_path, capsys=capsys)
    assert got == code and err.strip() == message and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]
    assert (tmp_path / "r.jsonl").read_text() == "old\n"


def test_help_explains_each_kind_with_an_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli("--help", cwd=tmp_path, capsys=capsys)
    assert code == 0
    for kind in KINDS.values():
        assert f"  {kind.name} N  (N {kind.unit}, default seed {kind.default_seed})" in out
        assert f"e.g. {kind.example}" in out
    assert "fluvial generate tweets 100000 tweets.jsonl" in out and "- for stdout" in out
