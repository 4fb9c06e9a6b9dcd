"""ingest_file: every line is accepted, a duplicate, blank or a dead letter (with its raw bytes)."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

import fluvial
from fluvial.errors import ConfigError, SchemaError
from fluvial.ingest import ingest_file, parse_time_ms
from fluvial.log import DeadLetter


def events_in(ws: fluvial.Workspace) -> list[fluvial.Event]:
    out: list[fluvial.Event] = []
    for p, end in enumerate(ws.log.end_offsets()):
        out.extend(ws.log.read(p, 0, stop_offset=end).events)
    return out


def dead(ws: fluvial.Workspace) -> list[DeadLetter]:
    return ws.dead_letters.read()


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    with fluvial.open(tmp_path / "data", writer=True) as w:
        yield w


def test_counts_match_an_independent_count(ws: fluvial.Workspace, tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    lines: list[bytes] = []
    for _ in range(3000):
        r = rng.random()
        if r < 0.80:
            obj: Any = {"user": f"u{rng.randrange(50)}", "text": "x" * rng.randrange(5),
                        "ts": rng.randrange(10**12, 2 * 10**12)}
        elif r < 0.85:
            obj = {"user": rng.randrange(10), "text": "t", "ts": 1}        # user not a str
        elif r < 0.90:
            obj = {"text": "no user", "ts": 1}                            # missing device field
        elif r < 0.93:
            obj = rng.choice([[1, 2], 3, "s", None])                      # not an object
        else:
            lines.append(rng.choice([b"", b"   ", b"{oops", b"\xff{}"]))
            continue
        lines.append(json.dumps(obj).encode())
    # an independent count
    blank = sum(1 for b in lines if not b.strip())
    good = 0
    for b in lines:
        try:
            o = json.loads(b)
        except ValueError:
            continue
        if isinstance(o, dict) and isinstance(o.get("user"), str) and "text" in o:
            good += 1
    f = tmp_path / "tweets.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")

    r = ingest_file(ws, f, kind="tweet", device_field="user", ts_field="ts", batch_size=257)
    assert (r.accepted, r.duplicates, r.skipped) == (good, 0, blank)
    assert r.rejected == len(lines) - good - blank
    assert r.lines == len(lines) == r.accepted + r.duplicates + r.rejected + r.skipped
    assert len(events_in(ws)) == good
    letters = dead(ws)
    assert [d.line for d in letters] == [i + 1 for i, b in enumerate(lines)
                                         if b.strip() and not _is_good(b)]
    assert all(d.raw == lines[d.line - 1] for d in letters if d.line is not None)

    # The same content again is refused: nothing is stored twice.
    with pytest.raises(ConfigError, match=r"already ingested .* --force"):
        ingest_file(ws, f, kind="tweet", device_field="user", ts_field="ts")
    assert len(events_in(ws)) == good


def test_force_stores_the_same_content_again_with_new_seqs(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "same.jsonl"
    f.write_text("".join(json.dumps({"user": "u1", "text": f"t{i}"}) + "\n" for i in range(5)))
    first = ingest_file(ws, f, kind="tweet", device_field="user")
    second = ingest_file(ws, f, kind="tweet", device_field="user", force=True)
    assert (first.accepted, second.accepted, second.duplicates) == (5, 5, 0)
    seqs = [e.seq for e in events_in(ws)]
    assert len(set(seqs)) == 10


def test_two_files_with_the_same_device_and_line_numbers_do_not_collide(
        ws: fluvial.Workspace, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"user": "u1", "text": "from a"}) + "\n")
    b.write_text(json.dumps({"user": "u1", "text": "from b"}) + "\n")
    assert ingest_file(ws, a, kind="tweet", device_field="user").accepted == 1
    assert ingest_file(ws, b, kind="tweet", device_field="user").accepted == 1
    assert sorted(e.payload["text"] for e in events_in(ws)) == ["from a", "from b"]


def test_an_interrupted_ingest_resumes_without_duplicates_or_losses(
        ws: fluvial.Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after a batch reached the log but before its progress was
    recorded: the rerun repeats that batch with the same seqs (dropped as
    duplicates) and appends the rest."""
    f = tmp_path / "big.jsonl"
    f.write_text("".join(json.dumps({"user": f"u{i % 7}", "text": f"t{i}"}) + "\n" for i in range(1000)))
    from fluvial.ingest import history as hist

    real = hist.LoadHistory.record
    calls = {"n": 0}

    def crash_on_third_progress(self: Any, *args: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # start record, two progress records, then die
            raise KeyboardInterrupt("simulated crash")
        real(self, *args, **kw)

    monkeypatch.setattr(hist.LoadHistory, "record", crash_on_third_progress)
    with pytest.raises(KeyboardInterrupt):
        ingest_file(ws, f, kind="tweet", device_field="user", batch_size=100)
    monkeypatch.setattr(hist.LoadHistory, "record", real)
    assert len(events_in(ws)) == 300          # three batches reached the log, two were recorded
    r = ingest_file(ws, f, kind="tweet", device_field="user", batch_size=100)
    assert (r.resumed_after, r.duplicates, r.accepted) == (200, 100, 700)
    assert sorted(e.payload["text"] for e in events_in(ws)) == sorted(f"t{i}" for i in range(1000))


def _is_good(b: bytes) -> bool:
    try:
        o = json.loads(b)
    except ValueError:
        return False
    return isinstance(o, dict) and isinstance(o.get("user"), str) and "text" in o


def test_envelope_defaults_and_payload_kept(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "sensor-7.ndjson"
    f.write_text('{"kind": "temp", "value": 1.5, "extra": [1, {"a": null}]}\n'
                 '{"kind": "hum", "value": 2.0}\n')
    r = ingest_file(ws, f, kind="reading")
    assert (r.accepted, r.rejected) == (2, 0)
    evs = sorted(events_in(ws), key=lambda e: e.seq)
    assert [(e.device, e.kind, e.seq) for e in evs] == [("sensor-7", "reading", 1),
                                                       ("sensor-7", "reading", 2)]
    assert evs[0].payload == {"kind": "temp", "value": 1.5, "extra": [1, {"a": None}]}
    assert abs(evs[0].ts - evs[1].ts) < 60_000


def test_named_fields_iso_time_and_seq(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    rows = [
        {"d": "dev-1", "t": "2016-01-06T12:00:00Z", "n": 5, "kind": "temp", "value": 1.0},
        {"d": 42, "t": 1452081600001, "n": 6, "kind": "temp", "value": 1.0},       # int device
        {"d": "dev-1", "t": "not a time", "n": 7, "kind": "temp", "value": 1.0},
        {"d": "dev-1", "t": 1.5, "n": 8, "kind": "temp", "value": 1.0},
        {"d": "dev-1", "t": 1, "n": -1, "kind": "temp", "value": 1.0},
        {"d": "dev-1", "t": 1, "n": "9", "kind": "temp", "value": 1.0},
        {"d": "", "t": 1, "n": 10, "kind": "temp", "value": 1.0},
        {"d": ["x"], "t": 1, "n": 11, "kind": "temp", "value": 1.0},
        {"t": 1, "n": 12, "kind": "temp", "value": 1.0},
        {"d": "dev-1", "t": 1, "n": 13, "kind": "temp", "value": "hot"},          # schema
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = ingest_file(ws, f, kind="reading", device_field="d", ts_field="t", seq_field="n")
    assert r.accepted == 2
    evs = sorted(events_in(ws), key=lambda e: e.seq)
    assert [(e.device, e.ts, e.seq) for e in evs] == [("dev-1", 1452081600000, 5),
                                                     ("42", 1452081600001, 6)]
    reasons = dict(r.rejected_examples)
    assert set(reasons) == set(range(3, 11))
    assert "$.payload.t" in reasons[3] and "--ts-field t" in reasons[3]
    assert "$.payload.t" in reasons[4] and "float" in reasons[4]
    assert "$.payload.n" in reasons[5] and "--seq-field n" in reasons[5]
    assert "$.payload.n" in reasons[6] and "str" in reasons[6]
    assert "$.payload.d" in reasons[7] and "--device-field d" in reasons[7]
    assert "$.payload.d" in reasons[8] and "array" in reasons[8]
    assert reasons[9] == "$.payload.d: missing required field (--device-field d)"
    assert reasons[10].startswith("$.payload.value: expected float")


HOSTILE: list[tuple[bytes, str]] = [
    (b'{"text": "ok 1"}', ""),
    (b'{"text": ', "invalid JSON"),
    (b"[1, 2, 3]", "expected a JSON object, got array"),
    (b"42", "expected a JSON object, got int"),
    (b'{"text": 5}', "$.payload.text: expected str, got int"),
    (b'{"other": "x"}', "$.payload.text: missing required field"),
    (b'{"text": "' + b"x" * (5 * 1024 * 1024) + b'"}', "longer than the limit"),
    (b'{"text": "caf\xe9"}', "invalid UTF-8"),
    (b'{"text": "a\x00b"}', "NUL byte"),
    (b"\x00\x00\x00\x00", "NUL byte"),
    (b'{"text": "big", "n": 123456789012345678901234567890}', "cannot be stored"),
    (b'{"text": "ok 2"}', ""),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_hostile_lines_are_dead_lettered_and_ingest_goes_on(
        ws: fluvial.Workspace, tmp_path: Path, newline: bytes) -> None:
    f = tmp_path / "hostile.jsonl"
    f.write_bytes(newline.join(raw for raw, _ in HOSTILE))  # no newline at the end
    r = ingest_file(ws, f, kind="line")
    assert r.lines == len(HOSTILE)
    assert r.accepted == 2 and r.rejected == len(HOSTILE) - 2
    assert sorted(e.payload["text"] for e in events_in(ws)) == ["ok 1", "ok 2"]
    reasons = dict(r.rejected_examples)
    letters = {d.line: d for d in dead(ws)}
    for line_no, (raw, expected) in enumerate(HOSTILE, start=1):
        if not expected:
            continue
        assert expected in reasons[line_no], (line_no, reasons[line_no])
        d = letters[line_no]
        assert d.source == str(f) and expected in d.reason
        if expected == "longer than the limit":
            assert d.raw == raw[: 1 << 20]  # a bounded prefix, not 5 MB
            assert f"{len(raw):,} bytes" in d.reason
        else:
            assert d.raw == raw  # intact, without the line terminator


def test_text_files_blank_lines_and_bad_bytes(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_bytes(b"to be\r\n\r\n  \nor \xff not\nnul\x00here\n{\"json\": 1}\nlast")
    r = ingest_file(ws, f, kind="line")
    assert (r.accepted, r.skipped, r.rejected, r.lines) == (3, 2, 2, 7)
    texts = {e.seq: e.payload["text"] for e in events_in(ws)}
    assert texts == {1: "to be", 6: '{"json": 1}', 7: "last"}
    assert {d.line: d.raw for d in dead(ws)} == {4: b"or \xff not", 5: b"nul\x00here"}


def test_empty_file_and_stream(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    r = ingest_file(ws, f, kind="line")
    assert (r.lines, r.accepted, r.rejected) == (0, 0, 0)
    r = ingest_file(ws, io.BytesIO(b"a\nb\n"), kind="line", name="stdin", format="text")
    assert r.accepted == 2
    assert {e.device for e in events_in(ws)} == {"stdin"}


def test_progress_reports_every_byte(ws: fluvial.Workspace, tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    seen: list[int] = []
    ingest_file(ws, f, kind="line", batch_size=100, progress=seen.append)
    assert sum(seen) == os.path.getsize(f) and len(seen) >= 10


def test_refusals_before_reading(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("a\n")
    with fluvial.open(tmp_path / "d", writer=True) as w:
        with pytest.raises(SchemaError, match="registered: line, reading, tweet"):
            ingest_file(w, f, kind="nope")
        with pytest.raises(ConfigError, match="cannot read"):
            ingest_file(w, tmp_path / "missing.txt", kind="line")
    with fluvial.open(tmp_path / "d") as r, pytest.raises(ConfigError, match="writer=True"):
        ingest_file(r, f, kind="line")


def test_json_fields_of_a_file_read_as_text_are_refused_before_reading(tmp_path: Path) -> None:
    """JSON lines in a file without a .jsonl name are text: asking for their fields would make
    every line a dead letter, so ingest refuses and says how to read them as JSON."""
    f = tmp_path / "readings.part-00"
    f.write_text(json.dumps({"device": "d1", "ts": 5, "kind": "temp", "value": 1.0}) + "\n")
    with fluvial.open(tmp_path / "d", writer=True) as w:
        for fields, flag in (({"device_field": "device"}, "--device-field device"),
                             ({"ts_field": "ts"}, "--ts-field ts"), ({"seq_field": "n"}, "--seq-field n")):
            with pytest.raises(ConfigError, match=f"read as text.*{flag} can be in no line.*--format jsonl"):
                ingest_file(w, f, kind="reading", **fields)
        with pytest.raises(ConfigError, match="it was asked for"):
            ingest_file(w, tmp_path / "x.jsonl", kind="reading", format="text", device_field="device")
        report = ingest_file(w, f, kind="reading", device_field="device", ts_field="ts", format="jsonl")
        assert (report.accepted, report.rejected) == (1, 0)
        assert w.dead_letters.count() == 0


def test_parse_time_ms() -> None:
    assert parse_time_ms("2016-01-06T12:00:00Z") == 1452081600000
    assert parse_time_ms("2016-01-06T13:00:00+01:00") == 1452081600000
    assert parse_time_ms("2016-01-06T12:00:00") == 1452081600000  # no offset: UTC
    assert parse_time_ms(5) == parse_time_ms("5") == 5
    with pytest.raises(ValueError):
        parse_time_ms("soon")
