"""Operator state: what a stream run carries from one micro-batch to the next.

Keyed by the plan position of the operator, which is stable across restarts
(the checkpoint's fingerprint says whether a plan still fits it). It is
checkpointed with every micro-batch (:mod:`fluvial.state.checkpoint`), in the
transaction that commits the micro-batch's view changes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExecState"]


@dataclass
class ExecState:
    """Everything a stream run carries from one micro-batch to the next (keyed by
    the plan position of the operator, which is stable across restarts)."""

    watermarks: dict[int, dict[Hashable, int]] = field(default_factory=dict)
    tables: dict[int, dict[Any, dict[Any, Any]]] = field(default_factory=dict)
    keyed: dict[int, dict[Any, Any]] = field(default_factory=dict)
    joins: dict[int, tuple[dict[Any, list[Any]], dict[Any, list[Any]]]] = field(default_factory=dict)
    late_counts: dict[int, int] = field(default_factory=dict)
