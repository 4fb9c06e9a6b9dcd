"""Canonical view keys and names shared by every store (pure).

A key is stored as its JSON text (tuples as arrays), which is both the
equality of keys and their sort order in query results.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from fluvial.errors import ConfigError

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

VIEW_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _check_key(key: Any) -> None:
    t = type(key)
    if t is str or t is int or t is bool or key is None:
        return
    if t is float:
        if not math.isfinite(key):
            raise ConfigError(f"view key {key!r} is not a finite number; NaN and infinities cannot be keys")
        return
    if t is tuple or t is list:
        for item in key:
            _check_key(item)
        return
    raise ConfigError(
        f"view key {key!r} has type {t.__name__}; keys must be str, int, float, bool, None "
        "or tuples/lists of them (map the key to one of these with key_by)"
    )


_PLAIN = frozenset({str, int})


def encode_key(key: Any) -> bytes:
    """The canonical bytes of a key (its JSON text)."""
    t = type(key)
    if t is not str and t is not int and not (t is tuple and _PLAIN.issuperset(map(type, key))):
        _check_key(key)  # the common keys (str, int, tuples of them) need no check
    return _encode(key)


def decode_key(data: bytes) -> Any:
    """The JSON-friendly value of a canonical key (tuples come back as lists)."""
    return _decode(data)


def check_view_name(name: Any) -> str:
    if not isinstance(name, str) or not VIEW_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid view name {name!r}: use 1 to 128 characters among letters, digits, "
            "'_', '.' and '-' (for example 'temperature.by_device')"
        )
    return name


def check_identifier(what: str, name: Any) -> str:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use a letter or '_' followed by up to 62 letters, "
            "digits or '_' (for example 'device_stats')"
        )
    return name
