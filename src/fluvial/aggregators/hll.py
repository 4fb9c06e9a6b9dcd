"""Approximate distinct counting: HyperLogLog with a stable 64-bit hash.

Values are hashed with ``xxh64`` of their canonical MessagePack encoding
(map keys sorted; ints beyond 64 bits as an Ext), never Python's ``hash()``, so the same value gives the same
register on every process, machine and run.  Note that ``1``, ``1.0`` and
``True`` encode differently and so count as distinct values; tuples and
lists with the same items are the same value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import msgspec
import xxhash

from fluvial.aggregators.builtin import _Builtin
from fluvial.errors import ConfigError

__all__ = ["Distinct"]

_ENCODE = msgspec.msgpack.Encoder(order="sorted").encode
_HASH = xxhash.xxh64_intdigest
_INV_POW2 = [2.0**-r for r in range(66)]


def _big_ints_as_ext(v: Any) -> Any:
    """Replace ints beyond 64 bits (which MessagePack cannot hold) by an Ext."""
    if isinstance(v, int) and not -(2**63) <= v < 2**64:
        n = (v.bit_length() + 8) // 8
        return msgspec.msgpack.Ext(1, v.to_bytes(n, "big", signed=True))
    if isinstance(v, (list, tuple)):
        return [_big_ints_as_ext(x) for x in v]
    if isinstance(v, dict):
        return {_big_ints_as_ext(k): _big_ints_as_ext(x) for k, x in v.items()}
    return v


def _encode_one(value: Any) -> bytes:
    try:
        return _ENCODE(value)
    except OverflowError:
        pass
    except (TypeError, msgspec.EncodeError) as e:
        raise TypeError(
            f"Distinct cannot hash {value!r} ({e}): values must be MessagePack-encodable "
            "(str, int, float, bool, None, bytes, lists, dicts, ...)"
        ) from e
    return _ENCODE(_big_ints_as_ext(value))


def _encode_all(values: list[Any]) -> list[bytes]:
    try:
        return list(map(_ENCODE, values))
    except (TypeError, OverflowError, msgspec.EncodeError):
        return list(map(_encode_one, values))


class Distinct(_Builtin):
    """Approximate count of distinct values (HyperLogLog, ``2**precision`` registers).

    The standard error is about ``1.04 / sqrt(2**precision)`` (1.6% at the
    default 12, using 4 KiB per accumulator).  The accumulator is a
    ``bytearray`` of registers, mutated in place by ``add``/``add_many``; the
    empty ``bytearray()`` stands for all-zero registers so empty groups cost
    nothing.  ``merge`` is the register-wise maximum, so it is exact: merging
    partial sketches gives the sketch of the whole.  No inverse.

    Args:
        precision: Number of index bits, 4 to 18.

    Example:
        >>> d = Distinct()
        >>> d.result(d.add_many(d.zero(), ["a", "b", "a", "c"]))
        3
    """

    name = "distinct"

    def __init__(self, precision: int = 12) -> None:
        if isinstance(precision, bool) or not isinstance(precision, int) or not 4 <= precision <= 18:
            raise ConfigError(f"Distinct precision must be an int from 4 to 18, got {precision!r}")
        self.precision = precision
        self._m = 1 << precision
        self._shift = 64 - precision
        self._low_mask = (1 << self._shift) - 1
        m = self._m
        if m >= 128:
            self._alpha = 0.7213 / (1 + 1.079 / m)
        else:
            self._alpha = {16: 0.673, 32: 0.697, 64: 0.709}[m]

    def zero(self) -> bytearray:
        return bytearray()

    def _registers(self, acc: bytearray) -> bytearray:
        if not acc:
            acc.extend(bytes(self._m))
        elif len(acc) != self._m:
            raise ValueError(
                f"{self!r} got an accumulator of {len(acc)} registers; "
                f"expected {self._m} (was it made with another precision?)"
            )
        return acc

    def add(self, acc: bytearray, value: Any) -> bytearray:
        return self.add_many(acc, [value])

    def add_many(self, acc: bytearray, values: Iterable[Any]) -> bytearray:
        vals = values if type(values) is list else list(values)
        if not vals:
            return acc
        regs = self._registers(acc)
        shift, low, width = self._shift, self._low_mask, self._shift + 1
        for h in map(_HASH, _encode_all(vals)):
            i = h >> shift
            rank = width - (h & low).bit_length()
            if rank > regs[i]:
                regs[i] = rank
        return regs

    def merge(self, a: bytearray, b: bytearray) -> bytearray:
        if not a:
            return bytearray(b)
        if not b:
            return bytearray(a)
        if len(a) != len(b):
            raise ValueError(f"{self!r} cannot merge sketches of {len(a)} and {len(b)} registers")
        return bytearray(map(max, a, b))

    def is_zero(self, acc: bytearray) -> bool:
        return not any(acc)

    def result(self, acc: bytearray) -> int:
        if not acc:
            return 0
        m = self._m
        estimate = self._alpha * m * m / math.fsum(map(_INV_POW2.__getitem__, acc))
        zeros = acc.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # small-range (linear counting) correction
        return round(estimate)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "precision": self.precision}
