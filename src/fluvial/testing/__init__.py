"""The test harness of fluvial (public: use it to test your own flows).

* :func:`events_table` -- readable event fixtures from a small table;
* :func:`make_events` -- a seeded random generator of events (out of order,
  late, device retries); print the seed in your test;
* :func:`run_on` -- the harness of every runner (used by the two below and the Spark tests);
* :func:`run_batch` / :func:`run_stream` -- run a pipeline over events on the
  batch or the stream runner in a throw-away workspace and read back the
  rows of its views and ``save_to`` tables (:class:`RunResult`);
* :mod:`fluvial.testing.brute` -- reference semantics in plain Python
  (log order and de-duplication, lateness, windows, sessions) to compare
  runners with.

Example:
    >>> import operator, tempfile, fluvial as fl
    >>> from fluvial.testing import brute, events_table, run_batch, run_stream
    >>> evs = events_table('''
    ... | device | ts   | value |
    ... | d1     | 1000 | 2.5   |
    ... | d2     | 1200 | 1.0   |
    ... | d1     | 2100 | 0.5   |
    ... ''')
    >>> p = fl.Pipeline("sums")
    >>> (p.from_log("reading").map(lambda e: (e.device, e.payload["value"]))
    ...   .window(fl.Tumbling(length_ms=2000)).aggregate_by_key(fl.Sum()).to_view("sums"))
    >>> expected = brute.rows(brute.group(((e.device, w), e.payload["value"]) for e in evs
    ...                                   for w in brute.tumbling_windows(e.ts, 2000)), brute.total)
    >>> tmp = tempfile.mkdtemp()
    >>> run_batch(p, evs, tmp)["sums"] == run_stream(p, evs, tmp, max_batch_records=1)["sums"] == expected
    True
"""

from fluvial.testing import brute
from fluvial.testing.fixtures import COLORS, events_table, make_events
from fluvial.testing.runs import RunResult, read_results, run_batch, run_on, run_stream

__all__ = [
    "COLORS",
    "RunResult",
    "brute",
    "events_table",
    "make_events",
    "read_results",
    "run_batch",
    "run_on",
    "run_stream",
]
