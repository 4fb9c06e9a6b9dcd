"""Append throughput: the log on NATS JetStream (R1) next to the embedded file log.

    .venv/bin/python bench/ingest_nats.py [--events 300000] [--per-append 5000] [--server 127.0.0.1:4222]

The same generated readings (1,000 devices, 4 partitions) are appended to a new
``file://`` log (fsync per append, the default) and to a new ``nats://`` log (one
stream per partition, R1, on the server given), in appends of ``--per-append``
events, as ingest does. Each side runs 3 times, alternating, each into a fresh log;
the table shows the median events/s. The NATS streams are deleted afterwards.
Needs a NATS server with JetStream (``nats-server -js``) and the ``nats`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

from fluvial.backends import open_log
from fluvial.config import LogConfig
from fluvial.events import Event

RUNS = 3


def readings(n: int) -> list[Event]:
    return [Event(device=f"dev-{i % 1000}", kind="reading", ts=1_700_000_000_000 + i, seq=i // 1000,
                  payload={"kind": "temp", "value": i * 0.5}) for i in range(n)]


def append_all(url: str, events: list[Event], per_append: int) -> float:
    """Events/s appending ``events`` into a new log at ``url``."""
    log = open_log(url, config=LogConfig(partitions=4))
    try:
        t0 = time.perf_counter()
        for i in range(0, len(events), per_append):
            result = log.append(events[i:i + per_append])
            assert result.accepted == len(events[i:i + per_append])
        elapsed = time.perf_counter() - t0
        assert sum(log.end_offsets()) == len(events)
    finally:
        log.close()
    return len(events) / elapsed


def delete_nats(server: str, name: str) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(f"nats://{server}")
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name.startswith(name + "-"):
                await js.delete_stream(info.config.name)
        await nc.close()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--per-append", type=int, default=5_000)
    parser.add_argument("--server", default="127.0.0.1:4222")
    args = parser.parse_args()
    events = readings(args.events)
    scratch = tempfile.mkdtemp(prefix="fluvial-bench-")
    names: list[str] = []

    def file_url() -> str:
        return f"file://{scratch}/{uuid.uuid4().hex}"

    def nats_url() -> str:
        names.append(f"bench{uuid.uuid4().hex[:10]}")
        return f"nats://{args.server}/{names[-1]}"

    sides: dict[str, Callable[[], str]] = {"file:// (fsync per append)": file_url, "nats:// R1": nats_url}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for _ in range(RUNS):
            for side, url in sides.items():
                rates[side].append(append_all(url(), events, args.per_append))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for name in names:
            delete_nats(args.server, name)
    print(f"{args.events:,} events, {args.per_append:,} per append, 4 partitions, median of {RUNS}\n")
    print(f"{'log':<28} {'events/s':>12}   runs")
    for side, values in rates.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{side:<28} {statistics.median(values):>12,.0f}   {runs}")


if __name__ == "__main__":
    main()
