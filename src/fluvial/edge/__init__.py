"""The device side of fluvial: store and forward, exactly once in effect.

:class:`EdgeClient` records a device's events into a bounded on-disk queue
(:class:`DiskQueue`, survives restarts and, with ``fsync="always"``, power loss) and sends them
to ``fluvial serve`` in MessagePack batches, gzip-compressed, retried with backoff until the
server answers; the server keeps one event per ``(device, seq)``, so a resend is harmless.

This package uses only the standard library and msgspec.
"""

from fluvial.edge.client import EdgeAuthError, EdgeClient, SendStats
from fluvial.edge.queue import DiskQueue, QueueFull, Stats

__all__ = ["DiskQueue", "EdgeAuthError", "EdgeClient", "QueueFull", "SendStats", "Stats"]
