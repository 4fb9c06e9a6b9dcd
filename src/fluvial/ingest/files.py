"""Ingest a file of lines into the log: decode, build envelopes, validate, dead-letter, append.

Every input line ends up in exactly one place (nothing is silently dropped):

* **accepted**: a valid event, appended to the log;
* **duplicate**: a valid event whose ``(device, seq)`` the log already holds
  (re-ingesting a file is idempotent);
* **skipped**: a blank line;
* **rejected**: kept in the dead-letter log with the reason, the source, the
  line number and the raw bytes of the line (without its ``\\n``/``\\r\\n``).

A ``.jsonl``/``.ndjson`` file holds one JSON object per line, which becomes the
payload unchanged; any other file is text, each line becoming ``{"text": line}``.

Example:
    >>> import tempfile, pathlib, fluvial
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "notes.txt").write_text("to be\\n\\nor not\\n")
    >>> with fluvial.open(d / "data", writer=True) as ws:
    ...     r = ingest_file(ws, d / "notes.txt", kind="line")
    >>> (r.accepted, r.skipped, r.rejected)
    (2, 1, 0)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from fluvial.errors import ConfigError, ValidationError
from fluvial.events.diagnose import json_problem, type_name
from fluvial.events.envelope import Event
from fluvial.ingest.history import LoadHistory, file_digest
from fluvial.log.deadletter import DeadLetter
from fluvial.log.limits import MAX_TS_MS, MIN_TS_MS, all_storable, event_problem

if TYPE_CHECKING:
    from fluvial.workspace import Workspace

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_LINE_BYTES",
    "JSON_SUFFIXES",
    "IngestReport",
    "ingest_file",
    "parse_time_ms",
]

DEFAULT_BATCH_SIZE = 10_000
DEFAULT_MAX_LINE_BYTES = 1 << 20
JSON_SUFFIXES = (".jsonl", ".ndjson")
MAX_EXAMPLES = 10
"""How many ``(line, reason)`` pairs an :class:`IngestReport` keeps."""

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_NUL = b"\x00"
_json = msgspec.json.Decoder()
_FLAGS = {"device": "--device-field", "ts": "--ts-field", "seq": "--seq-field"}


@dataclass
class IngestReport:
    """What :func:`ingest_file` did with each line of its input.

    Attributes:
        source: The input's name (its path, or ``<stdin>``).
        accepted: Events appended to the log.
        duplicates: Valid events whose ``(device, seq)`` the log already held.
        rejected: Lines sent to the dead-letter log.
        skipped: Blank lines.
        lines: Lines read (``accepted + duplicates + rejected + skipped``).
        bytes: Bytes read.
        seconds: Wall time of the ingest.
        rejected_examples: The first rejected lines as ``(line_no, reason)``.
        resumed_after: Lines an interrupted ingest of the same content had done.
    """

    source: str
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    lines: int = 0
    bytes: int = 0
    seconds: float = 0.0
    rejected_examples: list[tuple[int, str]] = field(default_factory=list)
    resumed_after: int = 0

    @property
    def lines_per_s(self) -> float:
        """Throughput of the ingest."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0


def parse_time_ms(value: int | str) -> int:
    """Return epoch milliseconds from an int (ms) or an ISO-8601 string.

    A string without a UTC offset is taken as UTC; digits alone are epoch ms.

    Example:
        >>> parse_time_ms("2016-01-06T12:00:00Z")
        1452081600000
        >>> parse_time_ms("1452081600000")
        1452081600000

    Raises:
        ValueError: The value is neither.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected epoch ms or an ISO-8601 time, got {value!r}")
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO-8601 time (like 2016-01-06T12:00:00Z) nor epoch ms"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class _Reject(Exception):
    """A line is refused; ``str(self)`` is the reason."""


def _field(payload: dict[str, Any], name: str, role: str) -> Any:
    try:
        return payload[name]
    except KeyError:
        raise _Reject(f"$.payload.{name}: missing required field ({_FLAGS[role]} {name})") from None


def _device(payload: dict[str, Any], name: str) -> str:
    value = _field(payload, name, "device")
    if type(value) is str and value:
        return value
    if type(value) is int:
        return str(value)
    raise _Reject(f"$.payload.{name}: expected a non-empty str or an int as device, got "
                  f"{type_name(value) if value != '' else 'empty str'} (--device-field {name})")


def _ts(payload: dict[str, Any], name: str) -> int:
    value = _field(payload, name, "ts")
    if type(value) is int:
        ts = value
    elif type(value) is str:
        try:
            ts = parse_time_ms(value)
        except (ValueError, OverflowError) as exc:
            raise _Reject(f"$.payload.{name}: {exc} (--ts-field {name})") from None
    else:
        raise _Reject(f"$.payload.{name}: expected int epoch ms or an ISO-8601 str, got "
                      f"{type_name(value)} (--ts-field {name})")
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        raise _Reject(f"$.payload.{name}: {ts} is out of range for epoch ms: fluvial stores the years 1 to "
                      f"9999 ({MIN_TS_MS} .. {MAX_TS_MS}) (--ts-field {name})")
    return ts


def _seq(payload: dict[str, Any], name: str) -> int:
    value = _field(payload, name, "seq")
    if type(value) is not int:
        raise _Reject(f"$.payload.{name}: expected int, got {type_name(value)} (--seq-field {name})")
    if not 0 <= value <= _UINT64_MAX:
        raise _Reject(f"$.payload.{name}: expected an int >= 0 (and < 2**64), got {value} "
                      f"(--seq-field {name})")
    return value


def _decode_json(line: bytes) -> dict[str, Any]:
    try:
        value = _json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        nul = line.find(_NUL)
        if nul >= 0:
            raise _Reject(f"contains a NUL byte at byte {nul} (binary data?)") from None
        problem = json_problem(line)
        raise _Reject(problem if problem.startswith("invalid UTF-8") else f"invalid JSON: {problem}") from None
    if type(value) is not dict:
        raise _Reject(f"$: expected a JSON object, got {type_name(value)}")
    return value


def _decode_text(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(f"invalid UTF-8 at byte {exc.start}") from None
    if "\x00" in text:
        raise _Reject(f"contains a NUL byte at byte {line.find(_NUL)} (binary data?)")
    return {"text": text}


def _is_json(name: str, fmt: str | None) -> bool:
    if fmt is None:
        return name.lower().endswith(JSON_SUFFIXES)
    if fmt not in ("jsonl", "text"):
        raise ConfigError(f"format must be 'jsonl' or 'text' (or None: by extension), got {fmt!r}")
    return fmt == "jsonl"


def ingest_file(
    ws: Workspace,
    path: str | os.PathLike[str] | IO[bytes],
    *,
    kind: str,
    device_field: str | None = None,
    ts_field: str | None = None,
    seq_field: str | None = None,
    format: str | None = None,
    name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
) -> IngestReport:
    """Append the lines of a file to ``ws.log`` as events of ``kind``.

    Args:
        ws: A workspace opened with ``writer=True``.
        path: The file, or a binary file object (e.g. ``sys.stdin.buffer``).
        kind: The registered schema every event must follow.
        device_field: Payload field holding the device id (default: the file's stem).
        ts_field: Payload field holding the event time, epoch ms or ISO-8601
            (default: the time of the ingest).
        seq_field: Payload field holding the device's sequence number (default:
            the device's next seq in the log, so events never collide).
        format: ``"jsonl"`` or ``"text"``; None: ``jsonl`` for ``.jsonl``/``.ndjson``.
        name: The source name for dead letters and the default device
            (default: ``path``, or the file object's ``name``).
        batch_size: Events per log append.
        max_line_bytes: Longer lines are rejected; only their first
            ``max_line_bytes`` bytes are kept as the dead letter's ``raw``.
        progress: Called after each batch with the bytes read since the last call.
        force: Ingest a file whose content was ingested before (its events are
            stored again, with new seqs).  Without it that is refused, and an
            interrupted ingest of the same content resumes where it stopped.

    Returns:
        The counts; ``lines == accepted + duplicates + rejected + skipped``.

    Raises:
        SchemaError: ``kind`` is not registered.
        ConfigError: Bad arguments, a readonly workspace, or the file cannot be opened.
        LogError: The log or the dead-letter log cannot be written.
    """
    if batch_size < 1 or max_line_bytes < 1:
        raise ConfigError("batch_size and max_line_bytes must be >= 1")
    shown = name or (os.fspath(path) if not hasattr(path, "readline") else str(getattr(path, "name", "-")))
    if not _is_json(shown, format):   # each line becomes {"text": LINE}: no other field can be found in it
        asked = [(flag, f) for flag, f in (("--device-field", device_field), ("--ts-field", ts_field),
                                           ("--seq-field", seq_field)) if f is not None and f != "text"]
        if asked:
            how = ("it was asked for (--format text)" if format == "text"
                   else "its name does not end in .jsonl or .ndjson")
            raise ConfigError(f"{shown} is read as text, each line becoming {{\"text\": LINE}} ({how}), so "
                              f"{asked[0][0]} {asked[0][1]} can be in no line: for JSON lines pass --format jsonl "
                              "(format='jsonl'), or name the file .jsonl")
    if not ws.writer:
        raise ConfigError(f"ingest appends to the log: open {ws.path} with writer=True")
    validate_payload = ws.schemas.get(kind).validate_payload  # SchemaError lists the kinds
    own = not hasattr(path, "readline")
    if own:
        source = name or os.fspath(path)  # type: ignore[arg-type]
        try:
            f: IO[bytes] = open(path, "rb", buffering=1 << 20)  # type: ignore[arg-type]  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    else:
        f = path  # type: ignore[assignment]
        source = name or str(getattr(f, "name", "<stream>"))
    is_json = _is_json(source, format)
    decode = _decode_json if is_json else _decode_text
    default_device = Path(source).stem or source
    log, dead = ws.log, ws.dead_letters
    history, digest, resume_after, base, size = None, "", 0, 0, 0
    if own:  # a file (not a stream): exactly once, by content
        history = LoadHistory(ws.path)
        digest = file_digest(path)  # type: ignore[arg-type]
        size = os.path.getsize(path)  # type: ignore[arg-type]
        previous = history.last(digest)
        if previous is not None and previous.done and not force:
            f.close()
            raise ConfigError(
                f"{source} was already ingested ({previous.accepted:,} events accepted, from "
                f"{previous.source}); ingesting it again would store its events twice. "
                "Pass --force (force=True) if that is what you want")
        if previous is not None and not previous.done:
            resume_after, base = previous.lines_done, previous.base
        else:
            base = history.next_base()
            history.record(digest, source, base, size, 0, 0, done=False)
    next_seq: dict[str, int] = {}

    def seq_of(device: str, line_no: int) -> int:
        if history is not None:
            return base + line_no
        n = next_seq.get(device)  # a stream: continue the device's counter in the log
        if n is None:
            n = log.next_seq(device)
        next_seq[device] = n + 1
        return n

    report = IngestReport(source=source, resumed_after=resume_after)
    started = time.perf_counter()
    events: list[Any] = []
    origins: list[tuple[int, bytes]] = []  # (line_no, raw) of each pending event
    letters: list[DeadLetter] = []
    reported = 0

    def reject(line_no: int, reason: str, raw: bytes) -> None:
        report.rejected += 1
        if len(report.rejected_examples) < MAX_EXAMPLES:
            report.rejected_examples.append((line_no, reason))
        letters.append(DeadLetter(reason=reason, source=source, line=line_no, raw=raw,
                                  at_ms=time.time_ns() // 1_000_000))

    def flush() -> None:
        nonlocal reported
        if events:
            if not all_storable(events):  # what the log would refuse: dead-lettered, not appended
                keep = []
                for ev, (n, raw) in zip(events, origins):
                    problem = event_problem(ev)
                    if problem is None:
                        keep.append(ev)
                    else:
                        reject(n, f"${problem[0]}: {problem[1]}", raw)
                events[:] = keep
            result = log.append(events)
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            events.clear()
            origins.clear()
        if letters:
            dead.append(letters)
            letters.clear()
        if history is not None:
            history.record(digest, source, base, size, line_no, report.accepted, done=False)
        if progress is not None:
            progress(report.bytes - reported)
            reported = report.bytes

    limit = max_line_bytes + 1
    line_no = 0
    now_ms = time.time_ns() // 1_000_000
    try:
        readline = f.readline
        while True:
            chunk = readline(limit)
            if not chunk:
                break
            line_no += 1
            report.bytes += len(chunk)
            if line_no <= resume_after:  # appended by an interrupted ingest of this file
                continue
            if chunk[-1:] == b"\n":
                line = chunk[:-2] if chunk[-2:] == b"\r\n" else chunk[:-1]
            elif len(chunk) == limit:  # too long: keep a prefix, skip the rest
                head, size, last2 = chunk[:max_line_bytes], len(chunk), chunk[-2:]
                while last2[-1:] != b"\n":
                    chunk = readline(limit)
                    if not chunk:
                        break
                    size += len(chunk)
                    last2 = (last2 + chunk[-2:])[-2:]
                report.bytes += size - limit
                size -= 2 if last2 == b"\r\n" else 1 if last2[-1:] == b"\n" else 0
                reject(line_no, f"line is {size:,} bytes, longer than the limit of "
                       f"{max_line_bytes:,} (raw keeps its first {max_line_bytes:,} bytes)", head)
                continue
            else:  # last line without a newline
                line = chunk[:-1] if chunk[-1:] == b"\r" else chunk
            if not line.strip():
                report.skipped += 1
                continue
            try:
                payload = decode(line)
                # The envelope is built here from checked values (each helper enforces the
                # Event field rules), so only the payload needs the schema: this is what
                # registry.validate() does after its envelope check, 2.5x faster.
                device = _device(payload, device_field) if device_field else default_device
                ts = _ts(payload, ts_field) if ts_field else now_ms
                given_seq = _seq(payload, seq_field) if seq_field else None
                validate_payload(payload)
                event = Event(device=device, kind=kind, ts=ts,
                              seq=seq_of(device, line_no) if given_seq is None else given_seq,
                              payload=payload)
                events.append(event)
                origins.append((line_no, line))
            except _Reject as exc:
                reject(line_no, str(exc), line)
                continue
            except ValidationError as exc:
                reject(line_no, str(exc), line)
                continue
            if len(events) >= batch_size:
                flush()
                now_ms = time.time_ns() // 1_000_000
        flush()
        if history is not None:
            history.record(digest, source, base, size, line_no, report.accepted, done=True)
    finally:
        if own:
            f.close()
        if history is not None:
            history.close()
    report.lines = line_no - resume_after
    report.seconds = time.perf_counter() - started
    return report
