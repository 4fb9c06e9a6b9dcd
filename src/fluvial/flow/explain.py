"""Lineage text for a DAG, in the style of Spark's ``RDD.toDebugString``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fluvial.flow.graph import Node

_SHUFFLES = {"aggregate", "state", "join", "sort"}


def describe(node: Node) -> str:
    p = node.params
    if node.op == "log":
        return f"LogSource[{node.id}] kind={p['kind'] or '*'}"
    if node.op in ("text", "jsonl"):
        return f"{'TextFile' if node.op == 'text' else 'JsonLines'}[{node.id}] {p['path']}"
    if node.op == "queue":
        return f"QueueSource[{node.id}] {len(p['batches'])} batches"
    if node.op == "rate":
        return f"RateSource[{node.id}] {p['per_second']}/s x {p['total']}"
    if node.op == "aggregate":
        window = f" window={p['window'].spec()}" if p["window"] is not None else ""
        lateness = f" lateness={p['lateness_ms']}ms" if p["lateness_ms"] else ""
        return f"ShuffledFlow[{node.id}] at {p['name']} agg={p['agg']!r}{window}{lateness}"
    if node.op == "state":
        return f"StateFlow[{node.id}] at {'map_with_state' if p['mode'] == 'map' else 'update_state_by_key'}"
    if node.op == "join":
        return f"JoinedFlow[{node.id}] at join"
    if node.op == "view":
        return f"ViewSink[{node.id}] {p['name']}"
    if node.op == "save":
        return f"StoreSink[{node.id}] {p['table']}({', '.join(p['columns'])})"
    if node.op == "file":
        return f"FileSink[{node.id}] {p['format']} {p['path']}"
    if node.op == "cache":
        return f"CachedFlow[{node.id}] at {'cache' if p['level'].value == 'memory' else 'persist'}"
    if node.op == "sort":
        return f"SortedFlow[{node.id}] at sort_by{'' if p['ascending'] else ' descending'}"
    if node.op == "repartition":
        return f"{'Shuffled' if p['shuffle'] else 'Coalesced'}Flow[{node.id}] at " \
               f"{'repartition' if p['shuffle'] else 'coalesce'}({p['n']})"
    if node.op in ("foreach", "print"):
        return f"{node.op.capitalize()}Sink[{node.id}]"
    return f"MappedFlow[{node.id}] at {p.get('name', node.op)}"


def explain_nodes(roots: Iterable[Node]) -> str:
    """Render each root's ancestry.  A stage boundary (a shuffle, or a union of
    several inputs) starts a ``+-`` branch; operators of one stage follow with ``|``.
    Persisted flows show their storage level and, once a run kept their elements,
    Spark's ``CachedPartitions`` line.
    """
    lines: list[str] = []

    def walk(node: Node, indent: str, prefix: str) -> None:
        storage = f" [{node.params['level'].describe()}]" if node.op == "cache" else ""
        lines.append(f"{indent}{prefix}{describe(node)} at {node.label}{storage}")
        base = indent + ("   " if prefix == "+-" else "")
        kept = node.params["slot"].describe() if node.op == "cache" else None
        if kept is not None:
            lines.append(f"{base}|       {kept}")
        boundary = node.op in _SHUFFLES or len(node.parents) > 1
        for parent in node.parents:
            walk(parent, base, "+-" if boundary else "|  ")

    for root in roots:
        walk(root, "", "")
    return "\n".join(lines)
