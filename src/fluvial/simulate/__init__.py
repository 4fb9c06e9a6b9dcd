"""A fleet of simulated devices that POSTs events to a fluvial server.

Two halves:

* :class:`Workload` (``workload.py``) says what the devices do, deterministically from
  a seed and without any I/O: sensors with a per-device baseline, noise and a slow
  drift; devices that go offline, buffer their readings and flush the backlog when
  they come back (so the server sees out-of-order and very late events); users whose
  tweets carry hashtags drawn from a Zipf-like law (so a top-10 means something).
* :class:`Simulator` (``driver.py``) paces that workload in real time and delivers it
  in batches (``POST {url}/v1/events``), resending a batch, with the same ``seq``
  numbers, whenever that is safe: the server stores a ``(device, seq)`` once.

Time inside the workload is the offset from its start, in milliseconds; an
event's ``ts`` is ``start_ms`` plus the offset at which it was measured, and it
is *sent* at the offset at which its device is online (later, for a backlog).

Example:
    >>> w = Workload(devices=2, rate=10, seed=1, start_ms=0, offline_fraction=0)
    >>> [(e.device, e.seq, e.ts, e.payload["kind"]) for e in w.events(3)]
    [('dev-0000', 0, 0, 'co2'), ('dev-0001', 0, 100, 'battery'), ('dev-0000', 1, 200, 'temperature')]
"""

from fluvial.simulate.driver import FORMATS, MAX_BATCH, Simulator, SimulatorReport
from fluvial.simulate.workload import KINDS, SENSORS, Workload

__all__ = ["FORMATS", "KINDS", "MAX_BATCH", "SENSORS", "Simulator", "SimulatorReport", "Workload"]
