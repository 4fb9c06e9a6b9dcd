"""Top 10 hashtags over the last 60 seconds: the seed's "Twitter Hashtag Counter".

Shows:
    A sliding event-time window written as in the seed: pair each hashtag
    with 1, ``reduce_by_key_and_window(add, 60 s, 1 s, inv=sub)`` (the inverse
    makes sliding cheap: each slide adds the newest pane and subtracts the
    oldest), then ``top(10)`` per window -- the seed's swap-and-sort.

Time:
    Event time (the tweet's time), per user: ``top(10)`` is itself a monoid
    aggregation, so a tweet that arrives late still corrects the top 10 of
    every window it falls in (within the 7-day correction horizon) and the
    view equals the batch layer's.  No allowed lateness: any tweet behind its
    user's latest is counted late (``fluvial views``), and corrected all the same.

Needs:
    Log events of kind ``tweet`` with payload ``{"user", "text", ...}`` and
    the tweet time as event time, e.g. what ``fluvial generate tweets N FILE`` writes.

Run:
    fluvial generate tweets 100000 tweets.jsonl
    fluvial ingest tweets.jsonl --kind tweet --device-field user --ts-field ts
    fluvial run examples/hashtag_top10.py --mode batch      # or --mode stream
    fluvial query hashtag_top10

View ``hashtag_top10``: key = null, window = ``[s, s + 60000)`` for every whole
second ``s`` whose window holds a hashtag, value = up to 10 ``[tag, count]``
pairs by count descending, then tag ascending.
"""

from __future__ import annotations

from operator import add, sub

import fluvial

WINDOW_MS = 60_000   # count all tweets in the last 60 seconds
SLIDE_MS = 1_000     # ... every second

pipeline = fluvial.Pipeline("hashtag_top10")
tweets = pipeline.from_log("tweet")
words = tweets.flat_map(lambda tweet: tweet.payload["text"].lower().split())   # split tweets into words
hashtags = words.filter(lambda word: word.startswith("#"))                     # pull out the hashtags
tag_counts_over_window = hashtags.map(lambda t: (t, 1)).reduce_by_key_and_window(add, WINDOW_MS, SLIDE_MS, inv=sub)
tag_counts_over_window.top(10).to_view("hashtag_top10")
