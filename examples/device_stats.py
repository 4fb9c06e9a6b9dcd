"""Per-device statistics per minute, in event time, with late data counted.

Shows:
    IoT readings keyed by a tuple ``(device, reading kind)``, 1-minute
    tumbling event-time windows, the :class:`~fluvial.Stats` monoid (count,
    min, max, mean), and a 30 s allowed lateness.  In a stream run a reading
    more than 30 s behind the largest event time already seen in its log
    partition is *late*: it is left out of the realtime view and counted in
    the view's ``late_events``; it stays in the log, so the next batch run
    includes it ("the batch layer gives the final answer").

Needs:
    Log events of kind ``reading`` with payload ``{"kind", "value"}``, device
    id as the event's device and the reading time as event time, e.g. what
    ``fluvial generate readings N FILE`` writes.

Run:
    fluvial generate readings 100000 readings.jsonl
    fluvial ingest readings.jsonl --kind reading --device-field device --ts-field ts
    fluvial run examples/device_stats.py --mode stream --until-caught-up
    fluvial query device_stats
    fluvial run examples/device_stats.py --mode batch      # the final answer, late events included

View ``device_stats``: key = ``[device, kind]``, window = ``[start_ms, start_ms + 60000)``,
value = ``{"count", "min", "max", "mean"}``.
"""

from __future__ import annotations

import fluvial

WINDOW = fluvial.Tumbling(length_ms=60_000)
ALLOWED_LATENESS_MS = 30_000

pipeline = fluvial.Pipeline("device_stats")
readings = pipeline.from_log("reading")
keyed = readings.map(lambda e: ((e.device, e.payload["kind"]), e.payload["value"]))
stats = keyed.window(WINDOW, allowed_lateness_ms=ALLOWED_LATENESS_MS).aggregate_by_key(fluvial.Stats())
stats.to_view("device_stats")
