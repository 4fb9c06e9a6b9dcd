"""Progress bars on stderr, only when it is a terminal (never in pipes or logs).

tqdm is imported lazily and is optional (``pip install 'fluvial[progress]'``):
without it, or when stderr is not a TTY, the bar is a no-op.
"""

from __future__ import annotations

import sys
from typing import Any, Self

__all__ = ["Bar", "progress_bar"]


class Bar:
    """A progress bar; a no-op unless it wraps a tqdm bar."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    def update(self, n: int) -> None:
        """Advance by ``n`` units."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, *, unit: str = "B",
                 enabled: bool | None = None) -> Bar:
    """A bar of ``total`` units (None: unknown), shown when stderr is a terminal.

    Args:
        total: Units to reach, or None.
        desc: The label in front of the bar.
        unit: ``"B"`` shows bytes with binary prefixes; anything else counts items.
        enabled: Force the bar on or off (default: ``sys.stderr.isatty()``).
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return Bar()
    try:
        from tqdm import tqdm
    except ImportError:
        return Bar()
    return Bar(tqdm(total=total, desc=desc, unit=unit, unit_scale=True,
                    unit_divisor=1024 if unit == "B" else 1000, leave=False, file=sys.stderr))
