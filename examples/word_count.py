"""Word count: the seed's "Basic Word Count", line by line.

Shows:
    flat_map -> map((w, 1)) -> reduce_by_key(add), the Spark RDD program of
    the seed, as one fluvial flow that runs unchanged in batch and stream mode,
    and ``explain()`` printing the lineage as Spark's ``toDebugString`` does.

Time:
    None: a count over all of history has no window, so arrival order and
    event time do not matter (every line counts, late or not).

Needs:
    Log events of kind ``line`` with payload ``{"text": ...}`` (for the view),
    or any UTF-8 text file (standalone).

Run:
    fluvial generate lines 5000 lines.jsonl                # {"device", "ts", "text"} per line
    fluvial ingest lines.jsonl --kind line --device-field device --ts-field ts
    fluvial run examples/word_count.py --mode batch        # or --mode stream
    fluvial query word_counts
    fluvial generate words 1 words.txt                     # 1 MiB of text
    python examples/word_count.py words.txt                # top 20 words of a file

View ``word_counts``: key = word, window = null, value = how often it occurs.
"""

from __future__ import annotations

import operator
import sys

import fluvial


def count_words(lines: fluvial.Flow[str]) -> fluvial.Table:
    """Split lines on whitespace and count each word (Spark: flatMap, map, reduceByKey)."""
    words = lines.flat_map(str.split)                      # split up into words
    pairs = words.map(lambda word: (word, 1))              # pair each word with 1
    return pairs.reduce_by_key(operator.add)               # combine all matching words


# The pipeline `fluvial run` finds: word counts over the log's `line` events.
pipeline = fluvial.Pipeline("word_count")
count_words(pipeline.from_log("line").map(lambda event: event.payload["text"])).to_view("word_counts")


def main(path: str, top: int = 20) -> None:
    """Count the words of a text file and print the ``top`` most frequent."""
    p = fluvial.Pipeline("word_count_file")
    counts = count_words(p.text_file(path))
    print(counts.explain())                                # like counts.toDebugString
    print()
    rows = counts.collect()                                # an action: runs a local batch runner
    for word, n in sorted(rows, key=lambda kv: (-kv[1], kv[0]))[:top]:
        print(f"{n:8d}  {word}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/word_count.py FILE")
    main(sys.argv[1])
