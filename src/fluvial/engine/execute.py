"""One micro-batch through a plan: the operator semantics every local runner shares.

A batch run is one micro-batch (evaluated in slices, see :meth:`Executor.map_side`);
a stream run is a sequence of micro-batches whose state (:class:`ExecState`)
the stream runner checkpoints together with view changes and log offsets.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fluvial.engine.plan import Plan
from fluvial.errors import FlowError
from fluvial.flow.graph import NARROW_OPS, SOURCE_OPS, Node, Windowed
from fluvial.state.operators import ExecState
from fluvial.windows.closing import evict
from fluvial.windows.shapes import Session, Sliding, Tumbling, compose
from fluvial.windows.watermark import CLOSED, DEFAULT_HORIZON_MS, DEFAULT_IDLE_MS, LATE, OLD, Watermarks


@dataclass
class Chunk:
    """Consecutive elements of one input partition (``origin``), with event times and,
    for events of devices, the device each element came from (``None`` for an element
    stamped in the future: see :mod:`fluvial.windows.watermark`)."""

    origin: tuple[int, int]
    values: list[Any]
    ts: list[int] | None
    devices: list[Any] | None = None


@dataclass
class BatchOutput:
    """What one micro-batch produced, for the runner to commit."""

    view_merges: dict[str, list[tuple[Any, Any, Any]]] = field(default_factory=dict)
    saves: list[tuple[Node, list[tuple[Any, ...]]]] = field(default_factory=list)
    prints: list[str] = field(default_factory=list)
    collected: dict[int, list[Any]] = field(default_factory=dict)
    late: dict[int, int] = field(default_factory=dict)   # aggregate position -> late events this batch
    records_out: int = 0
    files: list[tuple[Node, list[Any]]] = field(default_factory=list)   # file sink -> its elements
    cached: dict[int, list[Chunk]] = field(default_factory=dict)         # persisted flow -> its chunks


def _fail(node: Node, what: str, exc: BaseException | None = None) -> FlowError:
    cause = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return FlowError(f"{node.op} at {node.label}: {what}{cause}")


class Executor:
    """Evaluates a :class:`Plan` on the chunks of one micro-batch."""

    def __init__(self, plan: Plan, *, stream: bool, state: ExecState | None = None,
                 complete: bool = False) -> None:
        self.plan = plan
        self.stream = stream
        self.state = state or ExecState()
        self.complete = complete   # a replay of the log: nothing in it is beyond the correction horizon
        self._clocks: dict[int, str] = {}   # windowed aggregation -> "device" or "partition" event time

    # -- narrow operators -----------------------------------------------------
    def _narrow(self, node: Node, inputs: list[list[Chunk]]) -> list[Chunk]:
        op = node.op
        f: Callable[..., Any] = node.params.get("f") or _identity
        timed = node.id in self.plan.timed
        out: list[Chunk] = []
        if op == "union":
            return [c for chunks in inputs for c in chunks]
        for ch in inputs[0]:
            vals, ts = ch.values, (ch.ts if timed else None)
            devs = ch.devices if timed else None
            try:
                if op == "map":
                    out.append(Chunk(ch.origin, [f(v) for v in vals], ts, devs))
                elif op == "filter":
                    keep = [bool(f(v)) for v in vals]
                    out.append(Chunk(ch.origin, list(itertools.compress(vals, keep)),
                                     list(itertools.compress(ts, keep)) if ts is not None else None,
                                     list(itertools.compress(devs, keep)) if devs is not None else None))
                elif op == "flat_map":
                    if ts is None:
                        flat: list[Any] = []
                        extend = flat.extend
                        for v in vals:
                            extend(f(v))
                        out.append(Chunk(ch.origin, flat, None))
                    else:
                        flat, flat_ts, flat_devs = [], [], []
                        for i, (v, t) in enumerate(zip(vals, ts)):
                            items = f(v)
                            if not isinstance(items, list):
                                items = list(items)
                            flat.extend(items)
                            flat_ts.extend([t] * len(items))
                            if devs is not None:
                                flat_devs.extend([devs[i]] * len(items))
                        out.append(Chunk(ch.origin, flat, flat_ts, flat_devs if devs is not None else None))
                elif op == "map_partitions":  # its elements are no one device's
                    items = list(f(iter(vals)))
                    last = max(ts) if ts else 0
                    out.append(Chunk(ch.origin, items, [last] * len(items) if ts is not None else None))
                elif op == "with_timestamps":
                    new_ts = [int(f(v)) for v in vals]
                    out.append(Chunk(ch.origin, vals, new_ts if timed else None, devs))
                elif op == "lookup":
                    out.append(self._lookup(node, ch, ts, devs))
                elif op == "repartition":  # the local runners have no partitions to change
                    out.append(ch)
                else:  # pragma: no cover - planner guarantees the op set
                    raise _fail(node, "unknown operator")
            except FlowError:
                raise
            except Exception as exc:
                raise _fail(node, "the user function failed", exc) from exc
        return out

    def _lookup(self, node: Node, ch: Chunk, ts: list[int] | None, devs: list[Any] | None) -> Chunk:
        table, default, inner = node.params["table"], node.params["default"], node.params["inner"]
        get = table.get if hasattr(table, "get") else None
        vals: list[Any] = []
        out_ts: list[int] = []
        out_devs: list[Any] = []
        missing = object()
        for i, (k, v) in enumerate(_pairs(node, ch.values)):
            other = get(k, missing) if get else table(k)
            if other is missing or (other is None and not get):
                if inner:
                    continue
                other = default
            vals.append((k, (v, other)))
            if ts is not None:
                out_ts.append(ts[i])
            if devs is not None:
                out_devs.append(devs[i])
        return Chunk(ch.origin, vals, out_ts if ts is not None else None, out_devs if devs is not None else None)

    # -- aggregation ------------------------------------------------------------
    def partials(self, node: Node, chunks: list[Chunk]
                 ) -> tuple[dict[tuple[Any, Any], Any], list[Chunk], dict[tuple[Any, Any], Any]]:
        """Partial accumulators per (key, storage window) of one micro-batch: for views
        (every element but old ones), the late elements (stream runs only), and for the
        operator's own table, which state downstream reads (without the elements whose
        window is closed; the same dict when there are none).  See
        :mod:`fluvial.windows.watermark` for what late, old and closed mean."""
        p = node.params
        shape = p["window"]
        if shape is None or not self.stream:
            delta = self._group(node, chunks)
            return delta, [], delta
        late: list[Chunk] = []
        wm = self.watermarks(node)
        for_views: list[Chunk] = []
        for_table: list[Chunk] = []
        some_closed = False
        for ch in chunks:
            flags = wm.split(ch.origin, ch.ts or [], ch.devices)
            if not any(flags):
                for_views.append(ch)
                for_table.append(ch)
                continue
            late.append(_select(ch, [bool(f & (LATE | OLD)) for f in flags]))
            for_views.append(_select(ch, [not f & OLD for f in flags]))
            for_table.append(_select(ch, [not f & CLOSED for f in flags]))
            some_closed = True
        late = [c for c in late if c.values]
        delta = self._group(node, for_views)
        table = self._group(node, for_table) if some_closed and node.id in self.plan.stateful else delta
        return delta, late, table

    def watermarks(self, node: Node) -> Watermarks:
        """The watermarks of a windowed aggregation, over the state's highs (updated in place).
        Per device only over events of the log (other sources have no devices)."""
        p = node.params
        highs = self.state.watermarks.setdefault(self.plan.index[node.id], {})
        per = self._clocks.get(node.id)
        if per is None:
            per = self._clocks[node.id] = p.get("watermark", "device") if _reads_only_the_log(node) else "partition"
        return Watermarks(p["lateness_ms"], highs, per=per,
                          idle_ms=p.get("idle_ms", DEFAULT_IDLE_MS),
                          horizon_ms=None if self.complete else p.get("horizon_ms", DEFAULT_HORIZON_MS))

    def _group(self, node: Node, chunks: list[Chunk]) -> dict[tuple[Any, Any], Any]:
        p = node.params
        agg, shape, keyed = p["agg"], p["window"], p["keyed"]
        if isinstance(shape, Session):
            return self._session_partials(node, chunks)
        # Group values by (key, pane start); the hot loops do no function calls.
        groups: dict[Any, list[Any]] = defaultdict(list)
        try:
            if shape is None:
                combine = getattr(agg, "combine_pairs", None) if keyed else None
                if combine is not None:  # an aggregator's C-speed path (e.g. counting pairs)
                    pairs = [v for ch in chunks for v in ch.values] if len(chunks) != 1 else chunks[0].values
                    combined = combine(pairs)
                    if combined is not None:
                        return {(k, None): acc for k, acc in combined.items()}
                if keyed:
                    for ch in chunks:
                        try:
                            for k, v in ch.values:
                                groups[k].append(v)
                        except (TypeError, ValueError):
                            for _ in _pairs(node, ch.values):  # raises the helpful error
                                pass
                            raise
                else:
                    for ch in chunks:
                        groups[None].extend(ch.values)
                return {(k, None): agg.add_many(agg.zero(), vs) for k, vs in groups.items()}
            pane = shape.length_ms if isinstance(shape, Tumbling) else shape.pane_ms
            off = shape.offset_ms
            for ch in chunks:
                assert ch.ts is not None
                if keyed:
                    try:
                        for (k, v), t in zip(ch.values, ch.ts):
                            groups[(k, t - (t - off) % pane)].append(v)
                    except (TypeError, ValueError):
                        for _ in _pairs(node, ch.values):
                            pass
                        raise
                else:
                    for v, t in zip(ch.values, ch.ts):
                        groups[(None, t - (t - off) % pane)].append(v)
            return {(k, (s, s + pane)): agg.add_many(agg.zero(), vs) for (k, s), vs in groups.items()}
        except FlowError:
            raise
        except TypeError as exc:
            raise _fail(node, "keys must be hashable (use tuples, not lists)", exc) from exc
        except Exception as exc:
            raise _fail(node, f"aggregator {agg!r} failed", exc) from exc

    def _session_partials(self, node: Node, chunks: list[Chunk]) -> dict[tuple[Any, Any], Any]:
        agg, gap, keyed = node.params["agg"], node.params["window"].gap_ms, node.params["keyed"]
        per_key: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
        for ch in chunks:
            pairs = _pairs(node, ch.values) if keyed else ((None, v) for v in ch.values)
            for (k, v), t in zip(pairs, ch.ts or []):
                per_key[k].append((t, v))
        out: dict[tuple[Any, Any], Any] = {}
        for k, items in per_key.items():
            items.sort(key=lambda tv: tv[0])
            start = last = items[0][0]
            values: list[Any] = []
            for t, v in items:
                if t >= last + gap:
                    out[(k, (start, last + gap))] = agg.add_many(agg.zero(), values)
                    start, values = t, []
                last = t
                values.append(v)
            out[(k, (start, last + gap))] = agg.add_many(agg.zero(), values)
        return out

    def _table_rows(self, node: Node, delta: dict[tuple[Any, Any], Any]) -> Chunk:
        """Rows of an aggregated table that changed in this micro-batch, with their
        current values (the full table in a batch run)."""
        agg, shape = node.params["agg"], node.params["window"]
        pos = self.plan.index[node.id]
        table = self.state.tables.setdefault(pos, {})
        changed: dict[Any, set[Any]] = defaultdict(set)
        for (k, win), acc in delta.items():
            parts = table.setdefault(k, {})
            parts[win] = agg.merge(parts[win], acc) if win in parts else acc
            changed[k].add(win)
        rows: list[Any] = []
        ts: list[int] = []
        for k, wins in changed.items():
            if shape is None:
                rows.append((k, agg.result(table[k][None])))
                ts.append(0)
                continue
            composed = compose(shape, table[k].items(), agg)
            for window, acc in sorted(composed.items()):  # type: ignore[type-var]
                assert window is not None
                if _touches(shape, window, wins):
                    rows.append(Windowed(k, window, agg.result(acc)))
                    ts.append(window[0])
        if self.stream and shape is not None:
            finals = any(c.op == "final" for c in self.plan.children[node.id])
            closed = self._evict(node, table, finals=finals)
            if finals:
                self._finals[node.id] = [closed]
        return Chunk((pos, 0), rows, ts)

    def _evict(self, node: Node, table: dict[Any, dict[Any, Any]], *, finals: bool) -> Chunk:
        """Drop the panes of windows closed by the operator's watermark; with ``finals``,
        the rows of the windows closed since the last call (:func:`~fluvial.windows.closing.evict`)."""
        agg = node.params["agg"]
        closed = evict(node.params["window"], agg, table, self.watermarks(node).low(), finals=finals)
        return Chunk((self.plan.index[node.id], 0), [Windowed(k, w, agg.result(acc)) for k, w, acc in closed],
                     [w[0] for _, w, _ in closed])

    # -- per-key state and joins -------------------------------------------------
    def _state(self, node: Node, chunks: list[Chunk]) -> Chunk:
        f, mode = node.params["f"], node.params["mode"]
        pos = self.plan.index[node.id]
        states = self.state.keyed.setdefault(pos, {})
        elements = [(t, k, v) for ch in sorted(chunks, key=lambda c: c.origin)
                    for (k, v), t in zip(_pairs(node, ch.values), ch.ts or [])]
        elements.sort(key=lambda e: e[0])  # stable: ties keep partition order
        out, out_ts = [], []
        try:
            if mode == "map":
                for t, k, v in elements:
                    new_state, output = f(k, v, states.get(k))
                    if new_state is None:
                        states.pop(k, None)
                    else:
                        states[k] = new_state
                    if output is not None:
                        out.append(output)
                        out_ts.append(t)
            else:
                grouped: dict[Any, list[Any]] = {}
                last_ts: dict[Any, int] = {}
                for t, k, v in elements:
                    grouped.setdefault(k, []).append(v)
                    last_ts[k] = t
                for k, values in grouped.items():
                    new_state = f(values, states.get(k))
                    if new_state is None:
                        states.pop(k, None)
                    else:
                        states[k] = new_state
                    out.append((k, new_state))
                    out_ts.append(last_ts[k])
        except Exception as exc:
            raise _fail(node, "the state function failed", exc) from exc
        return Chunk((pos, 0), out, out_ts)

    def _join(self, node: Node, left: list[Chunk], right: list[Chunk]) -> Chunk:
        shape = node.params["window"]
        pos = self.plan.index[node.id]
        lstate, rstate = self.state.joins.setdefault(pos, ({}, {}))

        def items(chunks: list[Chunk]) -> list[tuple[Any, Any, int]]:
            res = []
            for ch in chunks:
                for (k, v), t in zip(_pairs(node, ch.values), ch.ts or []):
                    jk = (k, shape.storage_window(t)) if shape is not None else (k, None)
                    res.append((jk, v, t))
            return res

        out, out_ts = [], []
        new_left, new_right = items(left), items(right)
        for jk, v, t in new_left:
            for w, u in rstate.get(jk, ()):
                out.append((jk[0], (v, w)))
                out_ts.append(max(t, u))
            lstate.setdefault(jk, []).append((v, t))
        for jk, w, u in new_right:
            for v, t in lstate.get(jk, ()):
                out.append((jk[0], (v, w)))
                out_ts.append(max(t, u))
            rstate.setdefault(jk, []).append((w, u))
        return Chunk((pos, 0), out, out_ts)

    def _sort(self, node: Node, chunks: list[Chunk]) -> Chunk:
        """Every element of a bounded run, by key (stable: ties keep the order of the
        input partitions, then of each partition)."""
        f, ascending = node.params["f"], node.params["ascending"]
        items = [(v, t) for ch in sorted(chunks, key=lambda c: c.origin)
                 for v, t in zip(ch.values, ch.ts or itertools.repeat(0))]
        try:
            keys = [f(v) for v, _ in items]
            order = sorted(range(len(items)), key=keys.__getitem__, reverse=not ascending)  # stable both ways
        except Exception as exc:
            raise _fail(node, "the sort key function failed (keys must be comparable with each other)",
                        exc) from exc
        return Chunk((self.plan.index[node.id], 0), [items[i][0] for i in order], [items[i][1] for i in order])

    # -- the micro-batch ---------------------------------------------------------
    def map_side(self, inputs: dict[int, list[Chunk]]) -> dict[int, dict[tuple[Any, Any], Any]]:
        """Phase one of a batch run: the narrow operators and the partial
        aggregates of the boundary aggregations (no watermarks: batch runs keep
        every event).  Call on any slicing of the input; merge the results."""
        values = self._eval_narrow(inputs)
        out = {}
        for node in self.plan.boundary:
            chunks = [c for p in node.parents for c in values[p.id]]
            out[node.id] = self.partials(node, chunks)[0]
        return out

    def _eval_narrow(self, inputs: dict[int, list[Chunk]]) -> dict[int, list[Chunk]]:
        values: dict[int, list[Chunk]] = {}
        for node in self.plan.nodes:
            if node.op in SOURCE_OPS:
                values[node.id] = inputs.get(node.id, [])
            elif node.op in NARROW_OPS and all(p.id in values for p in node.parents):
                values[node.id] = self._narrow(node, [values[p.id] for p in node.parents])
        return values

    def run(self, inputs: dict[int, list[Chunk]], *, batch_time_ms: int,
            partials: dict[int, dict[tuple[Any, Any], Any]] | None = None,
            outputs: dict[int, list[Chunk]] | None = None,
            stamp: tuple[int, int] = (0, 0)) -> BatchOutput:
        """Evaluate the whole plan for one micro-batch.

        ``partials`` replaces the boundary aggregations' input (phase two of a
        sliced batch run); ``outputs`` gives the output of any other operator,
        computed elsewhere (by a Spark job), so that it is not evaluated here.
        ``stamp`` orders the rows of latest-value views: ``(0, 0)`` for batch runs,
        ``(1, micro_batch)`` for stream runs, so that realtime rows win over batch
        rows and later micro-batches over earlier ones.
        """
        self._stamp = stamp
        self._finals: dict[int, list[Chunk]] = {}
        out = BatchOutput()
        values = self._eval_narrow(inputs) if partials is None and outputs is None else {}
        values.update(outputs or {})
        deltas: dict[int, dict[tuple[Any, Any], Any]] = {}
        late: dict[int, list[Chunk]] = {}
        for node in self.plan.nodes:
            if node.id in values:
                continue
            if node.op in SOURCE_OPS:  # phase two of a sliced run: consumed by map_side()
                values[node.id] = inputs.get(node.id, []) if partials is None else []
                continue
            if partials is not None and node.id in self.plan.prefix:
                values[node.id] = []  # its elements were aggregated into ``partials``
                continue
            parents = [values.get(p.id, []) for p in node.parents]
            if node.op == "aggregate":
                if partials is not None and node.id in partials:
                    delta, late_chunks, table = partials[node.id], list[Chunk](), partials[node.id]
                else:
                    delta, late_chunks, table = self.partials(node, [c for cs in parents for c in cs])
                deltas[node.id] = delta
                late[node.id] = late_chunks
                if self.stream and node.params["window"] is not None:
                    self.watermarks(node).forget_quiet()
                n_late = sum(len(c.values) for c in late_chunks)
                if n_late:
                    pos = self.plan.index[node.id]
                    out.late[pos] = n_late
                    self.state.late_counts[pos] = self.state.late_counts.get(pos, 0) + n_late
                if node.id in self.plan.stateful:
                    values[node.id] = [self._table_rows(node, table)]
                else:
                    values[node.id] = []
            elif node.op == "late":
                values[node.id] = late.get(node.parents[0].id, [])
            elif node.op == "final":   # a stream run: the windows closed now; a batch run: every window
                parent = node.parents[0].id
                values[node.id] = self._finals.pop(parent, []) if self.stream else values.get(parent, [])
            elif node.op == "state":
                values[node.id] = [self._state(node, parents[0])]
            elif node.op == "join":
                values[node.id] = [self._join(node, parents[0], parents[1])]
            elif node.op == "cache":
                values[node.id] = out.cached[node.id] = parents[0]
            elif node.op == "sort":
                values[node.id] = [self._sort(node, parents[0])]
            elif node.op in NARROW_OPS:
                values[node.id] = self._narrow(node, parents)
            else:
                self._sink(node, parents[0], deltas, out, batch_time_ms)
        return out

    def _sink(self, node: Node, chunks: list[Chunk], deltas: dict[int, Any], out: BatchOutput,
              batch_time_ms: int) -> None:
        op, p = node.op, node.params
        if op == "view":
            src = node.parents[0]
            if src.op == "aggregate":
                out.view_merges[p["name"]] = [(k, w, acc) for (k, w), acc in deltas[src.id].items()]
                return
            latest: dict[tuple[Any, Any], Any] = {}
            for ch in chunks:
                for row in ch.values:
                    if isinstance(row, Windowed):
                        latest[(row.key, row.window)] = row.value
                    else:
                        k, v = _pair(node, row)
                        latest[(k, None)] = v
            rank, batch_no = self._stamp
            out.view_merges[p["name"]] = [(k, w, ((rank, batch_no, i), v))
                                          for i, ((k, w), v) in enumerate(latest.items())]
            return
        elements = [v for ch in chunks for v in ch.values]
        out.records_out += len(elements)
        if op == "collect":
            out.collected.setdefault(node.id, []).extend(elements)
        elif op == "file":
            out.files.append((node, elements))
        elif op == "save":
            out.saves.append((node, [_as_row(node, e, p["columns"]) for e in elements]))
        elif op == "foreach":
            for e in elements:
                try:
                    p["f"](e)
                except Exception as exc:
                    raise _fail(node, "the foreach function failed", exc) from exc
        elif op == "print":
            n = p["n"]
            lines = ["-------------------------------------------", f"Time: {batch_time_ms} ms",
                     "-------------------------------------------"]
            lines += [_show(e) for e in elements[:n]]
            if len(elements) > n:
                lines.append("...")
            lines.append("")
            out.prints.append("\n".join(lines))


def _identity(x: Any) -> Any:
    return x


def _reads_only_the_log(node: Node) -> bool:
    """Whether every source ``node`` depends on is the log (its events have devices)."""
    seen: set[int] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.op in SOURCE_OPS and n.op != "log":
            return False
        todo.extend(n.parents)
    return True


def _select(ch: Chunk, keep: list[bool]) -> Chunk:
    """The elements of ``ch`` where ``keep`` is true."""
    return Chunk(ch.origin, list(itertools.compress(ch.values, keep)),
                 list(itertools.compress(ch.ts, keep)) if ch.ts is not None else None,
                 list(itertools.compress(ch.devices, keep)) if ch.devices is not None else None)


def _touches(shape: Any, window: tuple[int, int], storage_windows: set[Any]) -> bool:
    if isinstance(shape, (Tumbling, Session)):
        return any(s is not None and s[0] < window[1] and window[0] < s[1] for s in storage_windows)
    assert isinstance(shape, Sliding)
    return any(window[0] <= s[0] and s[1] <= window[1] for s in storage_windows)


def _pairs(node: Node, values: Iterable[Any]) -> Iterable[tuple[Any, Any]]:
    for v in values:
        if type(v) is tuple and len(v) == 2:
            yield v
        else:
            yield _pair(node, v)


def _pair(node: Node, v: Any) -> tuple[Any, Any]:
    try:
        k, value = v
        return k, value
    except (TypeError, ValueError):
        raise _fail(node, f"expects (key, value) pairs, got {type(v).__name__} {v!r:.60}; "
                          "use key_by() or map(lambda x: (key, value)) first") from None


def _as_row(node: Node, e: Any, columns: list[str]) -> tuple[Any, ...]:
    if isinstance(e, dict):
        try:
            return tuple(e[c] for c in columns)
        except KeyError as exc:
            raise _fail(node, f"row {e!r:.60} has no column {exc}") from None
    if hasattr(e, "_fields") or isinstance(e, (tuple, list)):
        row = tuple(e)
    elif hasattr(e, "__dataclass_fields__") or hasattr(e, "__struct_fields__"):
        row = tuple(getattr(e, c) for c in columns)
    else:
        row = (e,)
    if len(row) != len(columns):
        raise _fail(node, f"row {e!r:.60} has {len(row)} values for {len(columns)} columns {columns}")
    return row


def _show(e: Any) -> str:
    if isinstance(e, tuple) and not isinstance(e, Windowed):
        return "(" + ",".join(str(x) for x in e) + ")"
    return str(e)
