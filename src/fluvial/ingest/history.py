"""The load history: which files were ingested, by content, and how far.

Re-ingesting a file must neither double its events nor lose any.  The log's
``(device, seq)`` de-duplication only covers a window of recent seqs per
device, so file-level idempotency lives here: every file is identified by the
SHA-256 of its content; after each batch appended, the number of lines done is
recorded.  Ingesting the same content again is refused (unless forced), and an
ingest that was interrupted resumes after the last recorded batch.

Events of a file without a seq field get ``seq = base + line number``: each
file gets its own ``base``, recorded before its first append and spaced by
file sizes (a file has fewer lines than bytes), so seqs of different files
never collide and a resumed ingest gives the events it repeats the same seqs
(the log then drops them as duplicates).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

HISTORY_FILE = "ingest-history.jsonl"


@dataclass(frozen=True)
class LoadRecord:
    sha256: str
    source: str
    base: int
    size: int
    lines_done: int
    accepted: int
    done: bool
    at_ms: int


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LoadHistory:
    """Append-only JSON-lines file of :class:`LoadRecord`; the last record of a digest wins."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / HISTORY_FILE
        self._file: IO[str] | None = None

    def records(self) -> list[LoadRecord]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(LoadRecord(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash
        return out

    def last(self, sha256: str) -> LoadRecord | None:
        found = None
        for record in self.records():
            if record.sha256 == sha256:
                found = record
        return found

    def next_base(self) -> int:
        """A seq base above every file's range so far."""
        return max((r.base + r.size + 1 for r in self.records()), default=0)

    def record(self, sha256: str, source: str, base: int, size: int, lines_done: int, accepted: int,
               done: bool) -> None:
        """Append a record and make it durable."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        rec = LoadRecord(sha256, source, base, size, lines_done, accepted, done,
                         time.time_ns() // 1_000_000)
        self._file.write(json.dumps(asdict(rec)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
