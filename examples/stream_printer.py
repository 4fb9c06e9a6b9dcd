"""Basic stream printer: the seed's ``queueStream`` word count, one batch at a time.

Shows:
    A queue of three text batches (the seed's words.txt, words2.txt and
    words3.txt, here three small texts) read one batch per micro-batch, split
    into words, counted, and the first 10 counts of every batch printed under
    a ``Time: ... ms`` header, as Spark Streaming's ``print()`` does.

    Spark's ``reduceByKey`` on a DStream counts words *within each batch*.  A
    fluvial ``reduce_by_key`` is a table kept across micro-batches (running
    totals: see stateful_word_count.py).  The queue gives batch ``i`` the event
    time ``START_MS + i * INTERVAL_MS``, so a tumbling window of exactly the
    batch interval holds exactly one batch: ``reduce_by_key_and_window(add,
    INTERVAL_MS)`` gives the seed's per-batch counts, and ``map`` drops the
    window to print ``(word,count)`` like the seed.  In a stream run every
    micro-batch prints its own batch; in a batch run the three batches are one
    run and print once.

Time:
    The queue's event time (batch ``i`` at ``START_MS + i * INTERVAL_MS``),
    per input partition: there are no devices, and the batches come in order,
    so nothing is late.

Needs:
    Nothing: the data are in this file.  A stream run checkpoints into a
    store, so the standalone run uses a temporary data directory.

Run:
    python examples/stream_printer.py
    fluvial run examples/stream_printer.py --mode stream --until-caught-up
"""

from __future__ import annotations

import operator
import tempfile

import fluvial

START_MS = 1_452_128_900_000          # the seed's first "Time: 1452128900000 ms"
INTERVAL_MS = 1_000                   # StreamingContext(conf, Seconds(1))

TEXTS = [  # words.txt, words2.txt, words3.txt
    "the quick brown fox jumps over the lazy dog\nthe dog sleeps and the fox runs",
    "to be or not to be\nthat is the question",
    "spark streaming groups data into batches\nfluvial groups events into micro batches\nthe end",
]

pipeline = fluvial.Pipeline("stream_printer")
stream_batches = pipeline.from_queue([text.splitlines() for text in TEXTS], one_at_a_time=True,
                                     start_ms=START_MS, interval_ms=INTERVAL_MS)
words = stream_batches.flat_map(lambda line: line.split(" "))
pairs = words.map(lambda word: (word, 1))
word_counts = pairs.reduce_by_key_and_window(operator.add, INTERVAL_MS)   # one window = one batch
word_counts.map(lambda row: (row.key, row.value)).print(10)               # first 10 of each batch


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir, fluvial.open(data_dir) as ws:
        # The queue is the only source: the runner needs a store (checkpoints), no log.
        runner = fluvial.StreamRunner(store=ws.store, batch_interval_ms=INTERVAL_MS)
        runner.run(pipeline, until_caught_up=True)


if __name__ == "__main__":
    main()
