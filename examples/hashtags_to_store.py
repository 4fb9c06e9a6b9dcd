"""Hashtag counts saved to a table: the seed's "Cassandra Stream Word Count".

Shows:
    ``save_to(store, table, columns)``, fluvial's ``saveToCassandra``: the
    total count of every hashtag, as ``HashTagCount(hashtag, count)`` rows
    (the seed's case class), upserted into table ``hashtag_counts`` of the
    serving store (``None`` = the runner's store; a PostgreSQL or Cassandra
    store object goes there too).  Upserts on the ``hashtag`` column make
    replays and restarts idempotent; in a stream run the table is written in
    the same transaction as the runner's checkpoint.

Time:
    None: totals over all of history, no window, so nothing is late.

Needs:
    Log events of kind ``tweet`` with payload ``{"text", ...}``.

Run:
    fluvial generate tweets 100000 tweets.jsonl
    fluvial ingest tweets.jsonl --kind tweet --device-field user --ts-field ts
    fluvial run examples/hashtags_to_store.py --mode stream --until-caught-up
    sqlite3 .fluvial/views.db 'SELECT * FROM hashtag_counts ORDER BY count DESC LIMIT 10'

Table ``hashtag_counts(hashtag, count)``: one row per hashtag, its total count.
"""

from __future__ import annotations

from operator import add
from typing import NamedTuple

import fluvial


class HashTagCount(NamedTuple):
    """A row of ``hashtag_counts`` (the seed's ``case class HashTagCount``)."""

    hashtag: str
    count: int


pipeline = fluvial.Pipeline("hashtags_to_store")
words = pipeline.from_log("tweet").flat_map(lambda tweet: tweet.payload["text"].lower().split())
hashtags = words.filter(lambda word: word.startswith("#")).map(lambda tag: (tag, 1))
(hashtags.reduce_by_key(add)                              # exactly the same as the map -> reduce
         .map(lambda kv: HashTagCount(kv[0], kv[1]))      # map to the case class
         .save_to(None, "hashtag_counts", ["hashtag", "count"]))   # save the stream to the store
