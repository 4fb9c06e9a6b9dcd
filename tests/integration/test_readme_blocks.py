"""The README's Quickstart and the command blocks of examples/README.md run verbatim.

Each block is taken from the Markdown as it is, minus only ``make install`` and
``. .venv/bin/activate`` (the suite already runs in that environment: its bin
directory goes first on PATH), and run by ``bash -e`` in a temporary directory
that holds a copy of ``examples/`` and nothing else (no ``../shared``, no data
directory).  A marker echoed before each command splits the output, so the rows
each command printed are compared with a brute force over the generated files.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SETUP_LINES = ("make install", ". .venv/bin/activate")
MARK = "@@@ fluvial readme block: command "


def fenced_blocks(markdown: str, lang: str) -> list[list[str]]:
    """The lines of every ```lang fenced block, in order."""
    return [m.group(1).splitlines() for m in re.finditer(rf"^```{lang}\n(.*?)^```$", markdown, re.S | re.M)]


def quickstart_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Quickstart\n"):]
    section = section[:section.index("\n## ", 1)]
    [block, *_] = fenced_blocks(section, "sh")
    return block


def command(line: str) -> str:
    """The line without its trailing comment, spaces collapsed (for matching: the script runs
    the line as written)."""
    return " ".join(re.sub(r"\s+#.*$", "", line).split())


def run_block(lines: list[str], cwd: Path) -> dict[str, str]:
    """Run the block's lines with ``bash -e`` in ``cwd``; return each command's stdout."""
    commands = [ln for ln in lines if command(ln) and not ln.lstrip().startswith("#")]
    assert not any(ln.rstrip().endswith("\\") for ln in lines), "one command per line"
    script = []
    for i, line in enumerate(lines):
        if line in commands:
            script.append(f"echo '{MARK}{i}'")
        script.append(line)
    (cwd / "block.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "FLUVIAL_HOME"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(["bash", "-e", "block.sh"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n" \
                                 f"--- stderr\n{proc.stderr[-3000:]}"
    out: dict[str, str] = {}
    parts = proc.stdout.split(MARK)
    assert len(parts) == len(commands) + 1, proc.stdout[-3000:]
    for part in parts[1:]:
        index, _, printed = part.partition("\n")
        out[command(lines[int(index)])] = printed
    return out


def workdir(tmp_path: Path) -> Path:
    """A directory with a copy of examples/ only: what a fresh clone has next to the README."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def without_setup(block: list[str]) -> list[str]:
    return [ln for ln in block if not command(ln).startswith(SETUP_LINES)]


# -- brute force over the generated files ------------------------------------------------------

def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hashtag_top10(tweets: list[dict[str, Any]], start_ms: int) -> list[list[Any]]:
    """The top 10 hashtags of the window [start_ms, start_ms + 60 s): count desc, then tag."""
    counts = Counter(w for t in tweets if start_ms <= t["ts"] < start_ms + 60_000
                     for w in t["text"].lower().split() if w.startswith("#"))
    return [[tag, n] for tag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]


def table_rows(printed: str) -> list[list[str]]:
    """The cells of ``fluvial query``'s table (no spaces inside cells here), header dropped."""
    lines = printed.splitlines()
    assert lines and lines[0].split()[0] == "KEY", printed
    return [ln.split() for ln in lines[1:]]


def iso_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() * 1000)


def jsonl_rows(printed: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in printed.splitlines()]


# -- the README's Quickstart ------------------------------------------------------------------

def test_quickstart_runs_verbatim_and_prints_the_brute_force_rows(tmp_path: Path) -> None:
    block = quickstart_block()
    firsts = [command(ln) for ln in block if command(ln)][:2]
    assert firsts[0] == "make install" and firsts[1] == ". .venv/bin/activate", \
        "the Quickstart starts with `make install` then `. .venv/bin/activate`"
    assert not any("../" in ln for ln in block), "a fresh clone has nothing beside it"
    cwd = workdir(tmp_path)
    out = run_block(without_setup(block), cwd)

    [generated] = list(cwd.glob("*.jsonl"))
    tweets = json_lines(generated)
    [ingest] = [v for k, v in out.items() if k.startswith("fluvial ingest")]
    assert f"accepted {len(tweets)}, duplicates 0, rejected 0" in ingest
    [query] = [v for k, v in out.items() if k.startswith("fluvial query hashtag_top10")]
    rows = jsonl_rows(query)
    first = min(t["ts"] for t in tweets) // 1000 * 1000 - 59_000    # the first window holding a tweet
    assert [r["window"] for r in rows] == [[first + i * 1000, first + i * 1000 + 60_000] for i in range(3)]
    for r in rows:
        assert r["key"] is None and r["value"] == hashtag_top10(tweets, r["window"][0]), r
    [stats] = [v for k, v in out.items() if k == "fluvial log stats"]
    assert re.search(rf"^total\s+{len(tweets)}\s", stats, re.M), stats
    [explain] = [v for k, v in out.items() if k.startswith("fluvial explain")]
    assert "LogSource" in explain and "kind=tweet" in explain


# -- examples/README.md ------------------------------------------------------------------------

def test_examples_readme_blocks_run_verbatim_and_print_the_brute_force_rows(tmp_path: Path) -> None:
    markdown = (ROOT / "examples" / "README.md").read_text()
    sh = [ln for block in fenced_blocks(markdown, "sh") for ln in block]
    assert not any("../" in ln or "/path/to" in ln for ln in sh), "a fresh clone has nothing beside it"
    cwd = workdir(tmp_path)
    out = run_block(without_setup(sh), cwd)

    def printed(prefix: str) -> str:
        [text] = [v for k, v in out.items() if k.startswith(prefix)]
        return text

    _check_word_counts(cwd, printed)
    _check_hashtags(cwd, printed("fluvial run examples/hashtag_top10.py"))
    _check_device_stats(cwd, printed("fluvial run examples/device_stats.py --mode stream"))
    _check_exercises(cwd, printed("fluvial --data-dir muvr run examples/muvr_classifier.py"))
    assert printed("python examples/stream_printer.py").count("Time: ") == 3
    assert printed("fluvial run examples/stream_printer.py").count("Time: ") == 3
    assert printed("python examples/stateful_word_count.py").count("Time: ") == 6

    # the first Python block; the second (cache, take_ordered, files) is tests/integration/test_examples_readme.py's
    python, _ = fenced_blocks(markdown, "python")
    (cwd / "block.py").write_text("\n".join(python) + "\n")
    proc = subprocess.run([sys.executable, "block.py"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    groups = _reading_groups(cwd)
    rows = [re.fullmatch(r"Row\(key=(\[.*?\]), window=\((\d+), (\d+)\), value=(\{.*\})\)", ln)
            for ln in proc.stdout.splitlines()]
    assert len(rows) == 5 and all(rows), proc.stdout
    for m in rows:
        assert m is not None
        device, kind = ast.literal_eval(m.group(1))
        _check_stats(groups[(device, kind, int(m.group(2)))], int(m.group(2)), int(m.group(3)),
                     ast.literal_eval(m.group(4)))


def _check_word_counts(cwd: Path, printed: Any) -> None:
    words = Counter((cwd / "words.txt").read_text().split())
    top = [ln.split() for ln in printed("python examples/word_count.py words.txt").splitlines()
           if re.fullmatch(r"\s*\d+\s+\S+", ln)]
    want = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert [(w, int(n)) for n, w in top] == want
    lines = Counter(w for r in json_lines(cwd / "lines.jsonl") for w in r["text"].split())
    for view in ("fluvial run examples/word_count.py", "fluvial run examples/stateful_word_count.py"):
        text = printed(view)
        rows = table_rows(text[text.index("KEY"):])
        assert len(rows) == 9 and all(lines[w] == int(n) for w, n in rows), (view, rows)


def _check_hashtags(cwd: Path, printed: str) -> None:
    tweets = json_lines(cwd / "tweets.jsonl")
    rows = [json.loads(ln) for ln in printed.splitlines() if ln.startswith("{")]
    last = max(t["ts"] for t in tweets) // 1000 * 1000          # the last window holding a tweet
    assert [r["window"][0] for r in rows] == [last - 1000, last]
    for r in rows:
        assert r["value"] == hashtag_top10(tweets, r["window"][0]), r


def _reading_groups(cwd: Path) -> dict[tuple[str, str, int], list[float]]:
    """readings.jsonl's values by (device, kind, minute)."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in json_lines(cwd / "readings.jsonl"):
        groups[(r["device"], r["kind"], r["ts"] // 60_000 * 60_000)].append(r["value"])
    return groups


def _check_stats(values: list[float], start_ms: int, end_ms: int, stats: dict[str, Any]) -> None:
    assert end_ms - start_ms == 60_000
    assert (stats["count"], stats["min"], stats["max"]) == (len(values), min(values), max(values))
    assert stats["mean"] == float(sum(map(Fraction, values)) / len(values))   # exact, correctly rounded


def _check_device_stats(cwd: Path, printed: str) -> None:
    groups = _reading_groups(cwd)
    rows = table_rows(printed[printed.index("KEY"):])
    assert len(rows) == 9
    for key, start, end, value in rows:
        device, kind = json.loads(key)
        _check_stats(groups[(device, kind, iso_ms(start))], iso_ms(start), iso_ms(end), json.loads(value))


def _check_exercises(cwd: Path, printed: str) -> None:
    model = __import__("runpy").run_path(str(cwd / "examples" / "muvr_classifier.py"))
    axes: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in json_lines(cwd / "accel.jsonl"):
        if r["kind"].startswith("accel_"):
            axes[(r["device"], r["ts"] // 2_000 * 2_000)][r["kind"][-1]].append(r["value"])
    rows = table_rows(printed[printed.index("KEY"):])
    assert len(rows) == 9
    for device, start, end, label in rows:
        samples = axes[(device, iso_ms(start))]
        features = {f"{stat}_{axis}": (statistics.fmean(samples[axis]) if stat == "mean"
                                       else statistics.pstdev(samples[axis]))
                    for axis in "xyz" for stat in ("mean", "std")}
        assert iso_ms(end) - iso_ms(start) == 2_000
        assert math.isfinite(features["std_z"]) and label == model["classify"](features), (device, start)
