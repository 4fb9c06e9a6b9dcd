"""The code block of examples/README.md on caching and files runs, and says what a brute force says.

The block is taken from the README as it is written (so the README cannot drift),
run in a directory holding a generated ``words.txt`` (seed printed); its printed top
ten, the part file it writes and its ``explain()`` are checked against plain Python.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
from collections import Counter
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "examples" / "README.md"


def cached_word_count_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Caching, the everyday actions and saving to files", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "examples/README.md lost its cached word count block"
    return found.group(1)


def test_the_cached_word_count_of_the_examples_readme(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(60)]
    lines = [" ".join(rnd.choices(vocabulary, weights=range(60, 0, -1), k=rnd.randrange(0, 12)))
             for _ in range(500)]
    (tmp_path / "words.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = Counter(w for line in lines for w in line.split())

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(cached_word_count_block(), str(README), "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    printed = out.getvalue().splitlines()
    assert printed[0] == repr(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
    written = (tmp_path / "word_counts" / "part-00000.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(written) == sorted(f"{w}\t{n}" for w, n in counts.items())
    assert printed[1].startswith("CachedFlow[") and printed[1].endswith("[Memory Deserialized 1x Replicated]")
    assert printed[2].startswith("|       CachedPartitions: 1; MemorySize: ")
