"""What the two hand-over property tests share (tests/property/test_layer_handover*.py): a log
of lines of words appended at random, batch runs interleaved with other operations (some
dying before they publish), the log read back, and the brute-force word count over it."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import fluvial as fl
from fluvial.engine.batch import BatchRunner

PARTITIONS = 3
WORDS = "abcdefg"


class BatchDied(Exception):
    """A batch run that dies after computing, before it publishes."""


class WordsWorld:
    """The log and the store of one example; subclasses say what ``do`` does and which pipeline runs."""

    def __init__(self, directory: Path, rng: random.Random, store_url: str) -> None:
        self.ws = fl.open(directory, writer=True, log_config=fl.LogConfig(partitions=PARTITIONS, fsync="never"),
                          store=store_url)
        self.rng = rng
        self.seq: Counter[str] = Counter()
        self.batches = 0

    def do(self, op: tuple[str, Any]) -> None:
        raise NotImplementedError

    def pipeline(self) -> fl.Pipeline:
        raise NotImplementedError

    def append(self, n: int) -> None:
        events = []
        for _ in range(n):
            device = f"d{self.rng.randrange(8)}"
            self.seq[device] += 1
            text = " ".join(self.rng.choices(WORDS, k=self.rng.randint(1, 3)))
            events.append(fl.Event(device=device, kind="line", ts=1_000 * self.seq[device],
                                   seq=self.seq[device], payload={"text": text}))
        self.ws.log.append(events)

    def batch(self, inner: list[tuple[str, Any]], *, dies: bool) -> None:
        """A batch run; ``inner`` runs while it computes (after its cut-off, before its publish)."""
        world = self

        class Interleaved(BatchRunner):
            def _execute(self, plan: Any, cutoff: Any) -> Any:
                for op in inner:
                    world.do(op)
                out = super()._execute(plan, cutoff)
                if dies:
                    raise BatchDied()
                return out

        runner = Interleaved(log=self.ws.log, store=self.ws.store, workers=1, own_log=True)
        try:
            runner.run(self.pipeline())
            self.batches += 1
        except BatchDied:
            pass

    def log_events(self) -> list[list[fl.Event]]:
        out = []
        for p in range(PARTITIONS):
            events, offset = [], 0
            while batch := self.ws.log.read(p, offset).events:
                events.extend(batch)
                offset += len(batch)
            out.append(events)
        return out


def brute(parts: list[list[fl.Event]], upto: list[int]) -> Counter[str]:
    """The word count over the first ``upto[p]`` events of each partition."""
    return Counter(w for events, n in zip(parts, upto) for e in events[:n] for w in e.payload["text"].split())
