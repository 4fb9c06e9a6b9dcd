"""The rest of Spark's actions (``take``, ``first``, ``take_ordered``, ``count_by_key``) and
its ``saveAs*`` sinks (``save_as_text_file``, ``save_as_json_lines``, ``save_as_parquet``).

Actions return a final value to the caller: they run a bounded (batch) run, by
default on the local batch runner.  File sinks write a directory of part files,
each written whole under a hidden temporary name and renamed into place, so a
reader never sees half a file: a batch run writes ``part-00000.EXT`` (replacing
the previous run's), a stream run one ``microbatch-NNNNNNNN.EXT`` per
micro-batch, numbered by the micro-batch it holds -- a micro-batch replayed
after a crash rewrites its own file, so each output element is in exactly one
file (exactly once per micro-batch).
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fluvial.errors import ConfigError

if TYPE_CHECKING:
    from fluvial.flow.graph import Runner

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["FILE_FORMATS", "Actions"]

FILE_FORMATS = {"text": ".txt", "jsonl": ".jsonl", "parquet": ".parquet"}
"""File sink formats and the extension of their part files."""


def _n(action: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{action}(): n must be an integer >= 0, got {n!r}")
    return n


def _directory(sink: str, path: object) -> str:
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"{sink}(): the path must be a string or a path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{sink}(): give the directory to write the part files into (got {path!r})")
    return text


class Actions(Generic[T]):
    """The actions and file sinks of :class:`~fluvial.flow.graph.Flow` (mixed into it)."""

    if TYPE_CHECKING:
        def collect(self, runner: Runner | None = None) -> list[T]: ...

        def _sink(self, op: str, **params: Any) -> None: ...

    # -- actions ---------------------------------------------------------------------
    def take(self, n: int, *, runner: Runner | None = None) -> list[T]:
        """The first ``n`` elements, in the order ``collect()`` returns them."""
        return self.collect(runner)[:_n("take", n)]

    def first(self, *, runner: Runner | None = None) -> T:
        """The first element; ``ValueError`` when there is none."""
        items = self.take(1, runner=runner)
        if not items:
            raise ValueError("first() of an empty flow")
        return items[0]

    def take_ordered(self, n: int, key: Callable[[T], Any] | None = None, *,
                     runner: Runner | None = None) -> list[T]:
        """The ``n`` smallest elements, by ``key(element)`` (default: the elements), ascending;
        ``key=lambda x: -x`` gives the largest.

        Example:
            >>> from fluvial.flow.graph import Pipeline
            >>> Pipeline("t").from_queue([[5, 1, 4], [2, 3]]).take_ordered(3, key=lambda x: -x)
            [5, 4, 3]
        """
        count = _n("take_ordered", n)
        if key is not None and not callable(key):
            raise ConfigError(f"take_ordered(): key must be a function, got {key!r:.40}")
        return heapq.nsmallest(count, self.collect(runner), key=key)

    def count_by_key(self: Actions[tuple[K, V]], *, runner: Runner | None = None) -> dict[K, int]:
        """How many ``(key, value)`` pairs each key has (a dict: keep the keys few)."""
        return dict(Counter(k for k, _ in self.collect(runner)))

    # -- file sinks ---------------------------------------------------------------------
    def save_as_text_file(self, path: str | os.PathLike[str]) -> None:
        """Write ``str(element)`` per line into part files under the directory ``path``
        (Spark's ``saveAsTextFile``; see the module for the file names)."""
        self._sink("file", path=_directory("save_as_text_file", path), format="text")

    def save_as_json_lines(self, path: str | os.PathLike[str]) -> None:
        """Write one JSON value per element and line into part files under ``path``
        (tuples become arrays, structs and dicts objects)."""
        self._sink("file", path=_directory("save_as_json_lines", path), format="jsonl")

    def save_as_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the elements -- dicts of one shape (or structs, named tuples) -- as
        Parquet part files under ``path`` (needs pyarrow)."""
        self._sink("file", path=_directory("save_as_parquet", path), format="parquet")
