"""Persistence of an intermediate flow: ``cache()`` and ``persist(level)`` (Spark's storage levels).

By default every action runs the whole lineage from its sources, as in Spark.
A persisted flow keeps what a batch run computed for it, so that the next
action over the same input starts from there instead of from the log:

* ``StorageLevel.MEMORY`` (``cache()``): in this process, on the flow itself
  (its :class:`CacheSlot`), for as long as the flow lives or until ``unpersist()``;
* ``StorageLevel.DISK``: in the runner's data directory (``DATA_DIR/cache``), so
  that another process running the same flow over the same log finds it too;
* ``StorageLevel.MEMORY_AND_DISK``: both.

A kept result is valid for the input it was computed from -- the log's end
offsets, the size and modification time of source files -- and recomputed when
that grew.  A stream run computes each micro-batch once anyway: persisting
changes nothing there.  This module only describes; the runners keep the data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.flow.graph import Flow, Node

T = TypeVar("T")

__all__ = ["CacheSlot", "Persistence", "StorageLevel"]


class StorageLevel(enum.Enum):
    """Where a persisted flow keeps its elements (Spark's ``StorageLevel``)."""

    MEMORY = "memory"
    DISK = "disk"
    MEMORY_AND_DISK = "memory_and_disk"

    @property
    def memory(self) -> bool:
        return self in (StorageLevel.MEMORY, StorageLevel.MEMORY_AND_DISK)

    @property
    def disk(self) -> bool:
        return self in (StorageLevel.DISK, StorageLevel.MEMORY_AND_DISK)

    def describe(self) -> str:
        """As Spark's ``toDebugString`` shows a storage level."""
        where = {"memory": "Memory Deserialized", "disk": "Disk Serialized",
                 "memory_and_disk": "Disk Memory Deserialized"}[self.value]
        return f"{where} 1x Replicated"

    @classmethod
    def of(cls, level: StorageLevel | str) -> StorageLevel:
        if isinstance(level, StorageLevel):
            return level
        if isinstance(level, str):
            try:
                return cls(level.lower())
            except ValueError:
                pass
        names = ", ".join(f"StorageLevel.{m.name}" for m in cls)
        raise ConfigError(f"persist(): unknown storage level {level!r}; use one of {names} "
                          "(or their names in lower case: 'memory', 'disk', 'memory_and_disk')")


@dataclass(eq=False)
class CacheSlot:
    """What a runner keeps in memory for a persisted flow, and what ``explain()`` shows of it.

    Attributes:
        level: The storage level asked for.
        key: The input the kept elements were computed from (runner-defined); None: nothing kept.
        value: The kept elements (runner-defined), when ``level.memory``.
        partitions: How many pieces (chunks) were kept.
        memory_bytes, disk_bytes: Their serialized size in memory and on disk.
    """

    level: StorageLevel
    key: Any = None
    value: Any = None
    partitions: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0

    def forget(self) -> None:
        """Drop what is kept in memory (the next action computes it again)."""
        self.key, self.value, self.partitions, self.memory_bytes, self.disk_bytes = None, None, 0, 0, 0

    def describe(self) -> str | None:
        """Spark's ``CachedPartitions`` line, or None when nothing is kept."""
        if self.key is None:
            return None
        return (f"CachedPartitions: {self.partitions}; MemorySize: {_size(self.memory_bytes)}; "
                f"DiskSize: {_size(self.disk_bytes)}")

    def __getstate__(self) -> dict[str, Any]:
        # Shipped with a plan to other processes (Spark executors): the description, not the data.
        return {"level": self.level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["level"])  # type: ignore[misc]  # re-initialise an unpickled slot


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


class Persistence(Generic[T]):
    """``cache()``, ``persist()`` and ``unpersist()`` of :class:`~fluvial.flow.graph.Flow`."""

    if TYPE_CHECKING:
        node: Node

        def _then(self, op: str, *parents: Flow[Any], **params: Any) -> Flow[Any]: ...

    def cache(self) -> Flow[T]:
        """Keep this flow's elements in memory once an action computed them: the next
        action over the same input starts here instead of reading the log again
        (``persist(StorageLevel.MEMORY)``).

        Example:
            >>> from fluvial.flow.graph import Pipeline
            >>> words = Pipeline("c").from_queue([["a b", "b"]]).flat_map(str.split).cache()
            >>> words.count(), words.take_ordered(2)
            (3, ['a', 'b'])
        """
        return self.persist(StorageLevel.MEMORY)

    def persist(self, level: StorageLevel | str = StorageLevel.MEMORY) -> Flow[T]:
        """Keep this flow's elements at ``level`` (see :class:`StorageLevel`) for the next
        actions over the same input; ``DISK`` keeps them in the data directory, so that
        another process finds them too.  A kept result is recomputed when the log grows."""
        storage = StorageLevel.of(level)
        return self._then("cache", level=storage, slot=CacheSlot(storage))

    def unpersist(self) -> Flow[T]:
        """Forget the elements kept in memory for this persisted flow (a ``DISK`` copy stays
        until the input grows, or until ``DATA_DIR/cache`` is deleted)."""
        if self.node.op != "cache":
            raise ConfigError("unpersist() applies to a flow returned by cache() or persist()")
        self.node.params["slot"].forget()
        return self  # type: ignore[return-value]  # a Persistence mixed into Flow is a Flow
