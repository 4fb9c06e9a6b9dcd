"""Stateful word count: the seed's "Stateful Stream Printer" with ``map_with_state``.

Shows:
    Per-key state carried from one micro-batch to the next (Spark's
    ``mapWithState`` with a ``StateSpec``): the state of a word is its running
    count, and every occurrence emits ``(word, total so far)``.  Each
    micro-batch prints its first 10 outputs under ``Time: ... ms``.  The state
    is checkpointed with the log offsets in one transaction, so a restarted
    runner continues the totals where it stopped (the seed's checkpoint dir).

Time:
    Processing order: each micro-batch applies its words in event-time order
    to the running totals; there is no window, so nothing is late.

Needs:
    Log events of kind ``line`` with payload ``{"text": ...}`` (for the view);
    nothing for the standalone demo (a rate source of sentences, like the
    seed's ``DummySource(ratePerSec = 1)``, into a temporary data directory).

Run:
    fluvial generate lines 5000 lines.jsonl
    fluvial ingest lines.jsonl --kind line --device-field device --ts-field ts
    fluvial run examples/stateful_word_count.py --mode stream    # or --mode batch
    fluvial query running_word_counts
    python examples/stateful_word_count.py                        # the demo

View ``running_word_counts``: key = word, value = its running total (the
latest output per word; after a complete run, the word's total count).
"""

from __future__ import annotations

import tempfile
from typing import Any

import fluvial

SENTENCES = ["i am a sentence", "another sentence i am", "a dummy source sends sentences"]


def state_mapping(key: str, value: int | None, state: int | None) -> tuple[int, tuple[str, int]]:
    """The seed's ``stateMappingFunc``: add this value to the word's state, emit the sum."""
    current = value or 0
    aggregated = state or 0
    total = current + aggregated
    return total, (key, total)          # (new state, output)


def running_counts(lines: fluvial.Flow[str]) -> fluvial.Flow[Any]:
    word_stream = lines.flat_map(str.split).map(lambda word: (word, 1))
    return word_stream.map_with_state(state_mapping)


# The pipeline `fluvial run` finds: running totals over the log's `line` events.
pipeline = fluvial.Pipeline("stateful_word_count")
word_count_state_stream = running_counts(pipeline.from_log("line").map(lambda e: e.payload["text"]))
word_count_state_stream.print(10)                       # the first 10 records of each micro-batch
word_count_state_stream.to_view("running_word_counts")  # latest (word, total) per word


def main(batches: int = 6) -> None:
    """Stream ``batches`` seconds of a one-sentence-per-second dummy source."""
    demo = fluvial.Pipeline("stateful_demo")
    sentences = demo.rate(1, total=batches, start_ms=1_452_011_283_000).map(
        lambda i: SENTENCES[i % len(SENTENCES)])
    running_counts(sentences).print(10)
    with tempfile.TemporaryDirectory() as data_dir, fluvial.open(data_dir) as ws:
        fluvial.StreamRunner(store=ws.store, batch_interval_ms=1_000).run(demo, until_caught_up=True)


if __name__ == "__main__":
    main()
