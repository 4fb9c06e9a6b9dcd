"""A job: a batch run, a reprocessing or a rollback, as the API and the UI show it."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "new_job_id"]


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Job:
    """A batch run, a reprocessing or a rollback started through the API or on a schedule."""

    id: str
    kind: str
    view: str
    pipeline: str
    status: str = "running"          # running | done | failed
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    finished_ms: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
