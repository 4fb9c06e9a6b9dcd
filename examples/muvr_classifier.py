"""Exercise classification from accelerometer readings: the seed's Muvr case, small.

Shows:
    Muvr first ran its speed layer on the server and found it "simply no good
    in production": latency too high, too sensitive to the network, always-on
    connectivity required.  The lesson: run the first steps where the data is
    born.  This flow is written so its first steps can run on the device --
    cut the accelerometer stream per device into 2 s windows and reduce each
    window to six numbers (mean and standard deviation per axis), a monoid that
    merges exactly, so only features cross the network -- and the last step,
    a tiny nearest-centroid classifier, labels each window.  (A real model
    would be trained by the batch layer, e.g. scikit-learn or Spark MLlib;
    here the centroids are written below and nothing needs installing.)

    The classifier is the ``result()`` of the features aggregator, so the view
    keeps mergeable moments and labels the merged batch ⊕ realtime features
    at query time: a late reading corrects the label instead of being lost.

Time:
    Event time per watch (``watermark="device"``): a watch that lost its
    phone connection and syncs minutes of readings later is not late (they
    are in its own order); readings more than 2 s behind their watch's latest
    are counted late and still merged into their window.  A Kappa reprocess
    (``fluvial reprocess exercises --from earliest``) replays the whole log
    with nothing late, so it labels exactly what the batch layer labels.

Needs:
    Log events of kind ``reading`` with payload ``{"kind": "accel_x" | "accel_y"
    | "accel_z", "value": m/s²}`` (other kinds are ignored), device id as the
    event's device, the reading time as event time, e.g. what ``fluvial
    generate accel N FILE`` writes (8 watches, one exercise per 2 s).

Run:
    fluvial generate accel 20000 accel.jsonl
    fluvial ingest accel.jsonl --kind reading --device-field device --ts-field ts
    fluvial run examples/muvr_classifier.py --mode stream --until-caught-up   # or --mode batch
    fluvial query exercises

View ``exercises``: key = device, window = ``[start_ms, start_ms + 2000)``, value = a label
of :data:`CENTROIDS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import fluvial

AXES = ("accel_x", "accel_y", "accel_z")
WINDOW = fluvial.Tumbling(length_ms=2_000)

# The model: one centroid per exercise over the features
# (mean_x, std_x, mean_y, std_y, mean_z, std_z), in m/s².
CENTROIDS: dict[str, tuple[float, ...]] = {
    "rest":           (0.0, 0.1, 0.0, 0.1, 9.8, 0.1),
    "biceps_curl":    (0.0, 2.8, 0.0, 0.4, 9.8, 0.8),
    "squat":          (0.0, 0.4, 0.0, 0.4, 9.8, 3.5),
    "shoulder_press": (0.0, 0.5, 0.0, 2.8, 9.8, 1.0),
}

Moments = dict[str, tuple[int, float, float]]   # axis -> (n, sum, sum of squares)


class AxisMoments(fluvial.Aggregator[tuple[str, float], Moments, dict[str, float]]):
    """Count, sum and sum of squares per axis: a monoid, so a device (or a
    gateway) can pre-aggregate and the server merges.  ``result()`` gives the
    features ``{"mean_x", "std_x", ...}`` (population standard deviation)."""

    name = "axis_moments"

    def zero(self) -> Moments:
        return {}

    def add(self, acc: Moments, value: tuple[str, float]) -> Moments:
        return self.add_many(acc, [value])

    def add_many(self, acc: Moments, values: Iterable[tuple[str, float]]) -> Moments:
        out = dict(acc)
        for axis, v in values:
            n, s, q = out.get(axis, (0, 0.0, 0.0))
            out[axis] = (n + 1, s + v, q + v * v)
        return out

    def merge(self, a: Moments, b: Moments) -> Moments:
        out = dict(a)
        for axis, (n, s, q) in b.items():
            n0, s0, q0 = out.get(axis, (0, 0.0, 0.0))
            out[axis] = (n0 + n, s0 + s, q0 + q)
        return out

    def result(self, acc: Moments) -> dict[str, float]:
        features: dict[str, float] = {}
        for axis in AXES:
            n, s, q = acc.get(axis, (0, 0.0, 0.0))
            mean = s / n if n else 0.0
            features[f"mean_{axis[-1]}"] = mean
            features[f"std_{axis[-1]}"] = math.sqrt(max(q / n - mean * mean, 0.0)) if n else 0.0
        return features


def classify(features: dict[str, float]) -> str:
    """The nearest centroid (Euclidean distance; ties to the first label)."""
    x = [features[f"{stat}_{axis}"] for axis in "xyz" for stat in ("mean", "std")]
    return min(CENTROIDS, key=lambda label: math.dist(x, CENTROIDS[label]))


class Exercise(AxisMoments):
    """:class:`AxisMoments` whose result is the exercise label of the features."""

    name = "muvr_exercise"

    def result(self, acc: Moments) -> Any:
        return classify(super().result(acc))


pipeline = fluvial.Pipeline("muvr_classifier")
accel = pipeline.from_log("reading").filter(lambda e: e.payload["kind"] in AXES)
# -- the first steps (could run on the device): per-device windows -> features
samples = accel.map(lambda e: (e.device, (e.payload["kind"], e.payload["value"])))
windows = samples.window(WINDOW, allowed_lateness_ms=2_000)
# -- the classification: each window's features -> its nearest centroid
windows.aggregate_by_key(Exercise()).to_view("exercises")
