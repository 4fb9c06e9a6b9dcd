"""Per-device statistics per minute, in event time, with late data counted.

Shows:
    IoT readings keyed by a tuple ``(device, reading kind)``, 1-minute
    tumbling event-time windows, the :class:`~fluvial.Stats` monoid (count,
    min, max, mean), and a 30 s allowed lateness.

Time:
    Event time per device (the default ``watermark="device"``), because
    devices go offline and flush their backlog later, in their own order, and
    their clocks disagree.  A reading is *late* when it is more than 30 s
    behind the latest reading of its own device: it is counted in the view's
    ``late_events``, and it still corrects the stored row of its window (the
    view is a monoid), as far back as the correction horizon (7 days).  So the
    realtime view equals the batch layer's over the same log, backlogs and
    late readings included; only readings older than the horizon are left to
    the batch layer.  A device whose clock runs ahead (readings stamped more
    than 5 min after they reached the log) holds nobody back.

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
