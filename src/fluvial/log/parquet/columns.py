"""The columns of the export's Parquet files (the package docstring lists them): their
schema, payloads as JSON (with MessagePack where JSON cannot hold them exactly) and back,
and pyarrow, imported when first needed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fluvial.errors import MissingDependency

__all__ = ["decode_payloads", "file_schema", "load_pyarrow", "payload_json"]

_json_enc = msgspec.json.Encoder()
_json_dec = msgspec.json.Decoder()
_mp_enc = msgspec.msgpack.Encoder()
_mp_dec = msgspec.msgpack.Decoder()


def load_pyarrow() -> Any:
    """The pyarrow module (with ``pyarrow.parquet`` loaded).

    Raises:
        MissingDependency: pyarrow is not installed (the ``parquet`` extra).
    """
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependency(
            "the Parquet export needs pyarrow: pip install 'fluvial[parquet]'") from None
    return pyarrow


def file_schema(pa: Any) -> Any:
    """The Arrow schema of the files (``pa``: the pyarrow module)."""
    return pa.schema([
        ("device", pa.string()), ("kind", pa.string()), ("ts", pa.int64()), ("seq", pa.int64()),
        ("payload", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("append_ms", pa.int64()), ("payload_msgpack", pa.binary()),
    ])


def payload_json(payload: dict[str, Any]) -> tuple[bytes, bytes | None]:
    """The payload as JSON and, when JSON does not give it back exactly, as MessagePack."""
    raw = _json_enc.encode(payload)
    if _json_dec.decode(raw) == payload:
        return raw, None
    return raw, _mp_enc.encode(payload)


def decode_payloads(table: Any) -> list[Any]:
    """Every payload of ``table``: one JSON decode of all of them, MessagePack where set."""
    pa = load_pyarrow()
    import pyarrow.compute as pc

    col = table.column("payload").combine_chunks()
    n = len(col)
    lists = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), col)
    joined = pc.binary_join(lists, ",")[0].as_buffer()
    payloads: list[Any] = _json_dec.decode(b"[" + joined.to_pybytes() + b"]") if n else []
    exact = table.column("payload_msgpack")
    if exact.null_count < n:
        for i, raw in enumerate(exact.to_pylist()):
            if raw is not None:
                payloads[i] = _mp_dec.decode(raw)
    return payloads
