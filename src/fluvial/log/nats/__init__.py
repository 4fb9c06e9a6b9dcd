"""A log on NATS JetStream: ``--log nats://HOST:PORT[,HOST:PORT...]/NAME[?replicas=N]``.

Design (docs/architecture.md, "The log on NATS JetStream", says the same for users):

* **One stream per partition** (``NAME-p0000`` ... with subject ``fluvial.NAME.p0000``),
  plus ``NAME-meta`` holding the partition count. Per-partition sequences are then the
  order of the partition, and a stream's limits (retention) drop a partition's oldest
  messages only; ``start_offsets()`` is read from the stream's first message.
* **Many events per message.** A message is a batch (MessagePack, as a LocalLog batch),
  and record offsets count *events*: each message's headers carry its first offset and
  event count, event-time range, the partition's running max/min event time and the
  append time (:mod:`~fluvial.log.nats.frames`). ``read(p, o)`` finds the message holding
  ``o`` by binary search over sequences (headers only), then reads on in order;
  ``offset_for_time`` binary-searches the running max event time the same way (the
  protocol asks for event time; JetStream's ``DeliverPolicy.BY_START_TIME`` is arrival
  time, so it is not used).
* **Replicas** from the URL (``?replicas=3``, default 1), used when a stream is created.
* **Exactly once by ``(device, seq)`` with any number of writers**
  (:mod:`~fluvial.log.nats.append`): the de-duplication layer of :mod:`fluvial.log.dedup`,
  its state rebuilt from the streams on open, and every publish conditional on the tail
  the writer has read (``Nats-Expected-Last-Sequence``), so no batch is stored whose
  writer had not seen everything before it. ``Nats-Msg-Id`` (content hash) drops a
  retried batch within JetStream's duplicate window.
* **A synchronous protocol over an asyncio client**: nats-py on a private event-loop
  thread (:mod:`~fluvial.log.nats.connection`), imported only when a ``nats://`` log opens.

Modules: ``address`` (the URL, stream and subject names), ``connection`` (the loop
thread), ``frames`` (message headers and bodies), ``reader`` (reads), ``append``
(appends and de-duplication), ``log`` (:class:`NatsLog`).
"""

from fluvial.log.nats.address import NatsAddress, parse_url
from fluvial.log.nats.log import NatsLog

__all__ = ["NatsAddress", "NatsLog", "parse_url"]
