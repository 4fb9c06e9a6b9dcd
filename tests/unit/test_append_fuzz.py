"""Fuzz the append path end to end: request bytes -> ingest's decoding -> the log -> reopen -> read.

``test_log_append.py`` fuzzes ``LocalLog.append`` with events of any type and ``parse_body``
with well-formed bodies. This adds what they leave out:

* bodies as bytes, as a device may send them: JSON (an array or one object), NDJSON,
  MessagePack, gzip, cut short or with a byte changed, random bytes, brackets nested
  thousands deep; envelopes with any JSON value in any field, missing and extra fields,
  ``ts``/``seq``/payload integers far beyond 64 bits (JSON carries any size), whole floats,
  strings with control characters and lone surrogates (as JSON escapes), payloads nested
  around the 256-level limit;
* only documented exceptions come out: :class:`IngestError` (400, 413, 415, 422) from
  decoding, nothing from appending what it accepted, :class:`ValidationError` (a
  :class:`FluvialError`) from ``LocalLog.append`` of raw events; every refused event has
  its reason, starting with its path, and a dead letter;
* exactly what was acknowledged is in the log, read back after the log is closed and
  opened again: a model keeps the first event acknowledged for each ``(device, seq)`` (and a
  retry more than the de-duplication window below its device's largest seq, which the log
  stores again, as :mod:`fluvial.log.dedup` documents); the log's partitions hold those
  events, equal field by field, in the order they were appended, and nothing else; sending
  them all again gives duplicates only (but for those beyond the window);
* the same items as a JSON array and as NDJSON get the same answer, event by event.

Randomised tests print their seed (``FLUVIAL_TEST_SEED=<n>`` reproduces one).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fluvial.errors import FluvialError, ValidationError
from fluvial.events import Event, SchemaRegistry
from fluvial.log import DeadLetter, DeadLetterLog, LocalLog
from fluvial.log.dedup import WINDOW
from fluvial.log.limits import MAX_DEPTH
from fluvial.server.ingest import AllRejected, IngestError, ParsedBody, decompress, parse_body

SEED = int(os.environ.get("FLUVIAL_TEST_SEED", random.randrange(2**32)))
MAX_BODY = 1 << 20
MAX_EVENTS = 50
REFUSED = {400, 413, 415, 422}  # what ingest answers for a body it does not take whole
REGISTRY = SchemaRegistry.with_builtins()


@pytest.fixture(autouse=True)
def _print_seed() -> None:
    print(f"seed {SEED} (FLUVIAL_TEST_SEED={SEED} reproduces it)")


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"n": value} if i % 2 else [value]
    return value


# -- values a device may send ------------------------------------------------------------------------

_edges = [0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**70, -(2**200), 10**40]
_ints = st.one_of(st.integers(-5, 5), st.integers(), st.sampled_from(_edges),
                  st.integers(min_value=-(10**60), max_value=10**60))
_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(_edges).map(float),
                    st.integers(-(2**53), 2**53).map(float))
_texts = st.one_of(st.sampled_from(["a", "b", "dev-1", "", "a\nb", "\x00", "\x7f", "\ud800", "z\udfff", "é"]),
                   st.text(max_size=6),
                   st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3))  # surrogates
_json = st.recursive(st.one_of(st.none(), st.booleans(), _ints, _floats, _texts),
                     lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(_texts, kids, max_size=3)),
                     max_leaves=12)
_deep = st.builds(nested, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3), _json)


def _field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly a plausible one, sometimes any JSON value."""
    return st.one_of(good, good, good, _json)


_payloads = st.one_of(
    st.fixed_dictionaries({"text": _field(st.text(max_size=8))}, optional={"x": _json}),            # line
    st.fixed_dictionaries({"user": _field(_texts), "text": _field(st.text(max_size=8))}),            # tweet
    st.fixed_dictionaries({"kind": _field(_texts), "value": _field(_floats)},                       # reading
                          optional={"deep": _deep, "big": _ints, "s": _texts}),
    st.dictionaries(_texts, _json, max_size=3), _json)
_envelopes = st.fixed_dictionaries(
    {}, optional={"device": _field(st.sampled_from(["a", "b", "c", "dev-1"])),
                  "kind": _field(st.sampled_from(["line", "tweet", "reading", "other"])),
                  "ts": _field(st.one_of(_ints, st.integers(-(2**63), 2**63 - 1), _floats)),
                  "seq": _field(st.one_of(st.integers(0, 12), _ints, st.integers(0, 12).map(float))),
                  "payload": _payloads, "extra": _json})


def _complete(envelope: dict[str, Any]) -> dict[str, Any]:
    """Mostly all five fields (else nearly every event would miss one)."""
    return envelope if "extra" in envelope else {
        "device": "a", "kind": "reading", "ts": 0, "seq": 0, "payload": {"kind": "t", "value": 1.0}, **envelope}


_valid = st.one_of(  # events the server takes (ts and seq at their edges, whole floats, big payload integers)
    st.fixed_dictionaries({"device": st.sampled_from(["a", "b", "c", "dev-1", "é\u2028"]), "kind": st.just("reading"),
                           "ts": st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1]),
                                           st.integers(0, 2**40).map(float)),
                           "seq": st.one_of(st.integers(0, 12), st.just(2**63 - 1), st.integers(0, 12).map(float)),
                           "payload": st.fixed_dictionaries({"kind": st.text(max_size=3), "value": _floats},
                                                            optional={"big": st.sampled_from([2**64 - 1, -(2**63)]),
                                                                      "deep": st.builds(nested, st.integers(0, 250)),
                                                                      "x": _json})}),
    st.fixed_dictionaries({"device": st.sampled_from(["a", "b"]), "kind": st.just("line"),
                           "ts": st.integers(0, 10), "seq": st.integers(0, 12),
                           "payload": st.fixed_dictionaries({"text": st.text(max_size=8)})}))
_items = st.one_of(_valid, _valid, _envelopes.map(_complete), _envelopes, _json)


# -- bodies ---------------------------------------------------------------------------------------------

_TYPES = ["application/json", "application/x-ndjson", "application/msgpack", "text/plain", "text/html", None]


def _encode(items: list[Any], form: str) -> bytes:
    if form == "ndjson":
        return "".join(json.dumps(item) + "\n" for item in items).encode()
    if form == "msgpack":
        try:
            return msgspec.msgpack.encode(items)
        except (OverflowError, UnicodeEncodeError, msgspec.EncodeError):  # beyond what MessagePack carries
            return json.dumps(items).encode()
    if form == "one-object" and items:
        return json.dumps(items[0]).encode()
    return json.dumps(items).encode()  # (lone surrogates as \\ud800 escapes; integers of any size)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    """(body, Content-Type, Content-Encoding) as a device might send them, broken or not."""
    form = draw(st.sampled_from(["json", "json", "ndjson", "msgpack", "one-object", "bytes", "deep"]))
    if form == "bytes":
        body = draw(st.binary(max_size=64))
    elif form == "deep":
        depth = draw(st.sampled_from([MAX_DEPTH, 1_000, 20_000, 200_000]))
        body = b"[" * depth + b"]" * draw(st.sampled_from([depth, 0]))
    else:
        body = _encode(draw(st.lists(_items, max_size=6)), form)
    fitting = {"msgpack": "application/msgpack", "ndjson": "application/x-ndjson"}.get(form, "application/json")
    ctype = draw(st.one_of(st.just(fitting), st.just(fitting), st.sampled_from(_TYPES)))
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "flip"]))
    if damage == "cut" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
    encoding = draw(st.sampled_from([None, None, "identity", "gzip", "gzip", "br"]))
    if encoding == "gzip":
        body = gzip.compress(body)
        if draw(st.booleans()):  # damaged on the way
            body = body[:draw(st.integers(0, len(body)))]
    return body, ctype, encoding


# -- the model of what was acknowledged -----------------------------------------------------------------------


class Acknowledged:
    """The events the log must hold: the first acknowledged for each (device, seq), in append order
    per partition; and again, a retry more than ``WINDOW`` below its device's largest seq (the
    de-duplication's documented limit, :mod:`fluvial.log.dedup`: it cannot tell, so it stores)."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], Event] = {}
        self.top: dict[str, int] = {}
        self.order: dict[int, list[Event]] = {}

    def beyond_window(self, event: Event) -> bool:
        top = self.top.get(event.device)
        return top is not None and event.seq < top - WINDOW

    def appended(self, log: LocalLog, events: list[Event], positions: list[tuple[int, int] | None]) -> None:
        assert len(positions) == len(events)
        for event, pos in zip(events, positions):
            key = (event.device, event.seq)
            if key in self.first and not self.beyond_window(event):
                assert pos is None, (event, pos)  # acknowledged again: a duplicate, not stored twice
                continue
            assert pos is not None, event  # new (or beyond the window): stored
            assert log.partition_for(event.device) == pos[0]
            self.first.setdefault(key, event)
            self.order.setdefault(pos[0], []).append(event)
            self.top[event.device] = max(self.top.get(event.device, event.seq), event.seq)

    def check(self, directory: Path) -> None:
        """Reopen the log: it holds exactly the acknowledged events; sending them again gives duplicates."""
        with LocalLog.open(directory) as log:
            for p in range(log.partitions):
                stored = log.read(p, 0).events
                assert stored == self.order.get(p, []), (p, stored[:5], self.order.get(p, [])[:5])
            events = list(self.first.values())
            if events:
                again = log.append(events, decoded=True)
                stored_again = sum(self.beyond_window(e) for e in events)
                assert (again.accepted, again.duplicates) == (stored_again, len(events) - stored_again)


def _assert_consistent(parsed: ParsedBody, total_items: int | None = None) -> None:
    """Each event of the body is either accepted or refused with a reason (path first) and a dead letter."""
    assert sorted(parsed.indices + [i for i, _ in parsed.rejected]) == list(range(parsed.total))
    assert len(parsed.letters) == len(parsed.rejected)
    for _, reason in parsed.rejected:
        assert reason.startswith("$"), reason
    assert all(type(e.ts) is int and type(e.seq) is int for e in parsed.events)
    if total_items is not None:
        assert parsed.total == total_items


# -- the tests ------------------------------------------------------------------------------------------------


@seed(SEED)
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests=st.lists(bodies(), min_size=1, max_size=6))
def test_ingest_then_append_acknowledges_exactly_what_the_log_holds(
        requests: list[tuple[bytes, str | None, str | None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = Acknowledged()
        kept: list[DeadLetter] = []
        with LocalLog.open(Path(tmp) / "log", partitions=3) as log, \
                DeadLetterLog.open(Path(tmp) / "dl") as letters:
            for body, ctype, encoding in requests:
                try:
                    parsed = parse_body(decompress(body, encoding, MAX_BODY), ctype, REGISTRY, max_events=MAX_EVENTS)
                except AllRejected as exc:  # every event refused: each one is a dead letter
                    _assert_consistent(exc.parsed)
                    letters.append(exc.parsed.letters)
                    kept += exc.parsed.letters
                    continue
                except IngestError as exc:  # refused whole
                    assert exc.status in REFUSED and exc.reason, exc
                    continue
                _assert_consistent(parsed)
                result = log.append(parsed.events, decoded=True)  # what ingest accepted, the log stores
                assert result.accepted + result.duplicates == len(parsed.events)
                model.appended(log, parsed.events, result.positions)
                letters.append(parsed.letters)
                kept += parsed.letters
        model.check(Path(tmp) / "log")
        with DeadLetterLog.open(Path(tmp) / "dl") as letters:
            assert letters.read(0) == kept


@seed(SEED)
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_items, min_size=2, max_size=8))
def test_json_and_ndjson_of_the_same_items_get_the_same_answer(items: list[Any]) -> None:
    """The same items as a JSON array and as NDJSON: the same events accepted, the same ones refused."""
    answers: list[tuple[list[int], list[Event], list[int]] | None] = []
    for ctype, form in [("application/json", "json"), ("application/x-ndjson", "ndjson")]:
        try:
            parsed = parse_body(_encode(items, form), ctype, REGISTRY, max_events=MAX_EVENTS)
        except AllRejected as exc:
            parsed = exc.parsed
        except IngestError as exc:  # unreadable as a whole (a JSON text of a lone surrogate, for one)
            assert exc.status in REFUSED, exc
            answers.append(None)
            continue
        _assert_consistent(parsed, len(items))
        answers.append((parsed.indices, parsed.events, [i for i, _ in parsed.rejected]))
    if None not in answers:
        assert answers[0] == answers[1]


_raw_events = st.builds(
    Event, device=st.one_of(st.sampled_from(["a", "b", "c"]), _texts, _ints),
    kind=st.one_of(st.just("reading"), _texts), ts=st.one_of(_ints, _floats, _texts),
    seq=st.one_of(st.integers(0, 12), _ints, st.booleans()), payload=st.one_of(_payloads, _deep, _json))


@seed(SEED)
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_raw_events, max_size=6), min_size=1, max_size=5))
def test_log_append_of_any_event_raises_only_validation_errors_and_keeps_what_it_acknowledged(
        batches: list[list[Event]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = Acknowledged()
        with LocalLog.open(tmp, partitions=2) as log:
            for batch in batches:
                try:
                    result = log.append(batch)
                except ValidationError as exc:
                    assert isinstance(exc, FluvialError) and exc.path.startswith("$[") and exc.reason, exc
                    continue
                model.appended(log, batch, result.positions)
        model.check(Path(tmp))
