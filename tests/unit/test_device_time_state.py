"""State stays bounded under device time (issue 11): 10^5 devices over a long run.

Devices come and go (a new generation of ~8,300 devices every 2.5 simulated minutes reports
for five, then goes quiet for good); the stream executor runs 5 s micro-batches for a
simulated hour.  Once the correction horizon (here 10 minutes) is reached, the operator state (the
devices' highs and the panes kept for state downstream of the aggregation) must stay flat:
it holds exactly the devices whose latest event is within the horizon of their partition's
latest (brute force), not every device ever seen, and the checkpoint's size stops growing.
"""

from __future__ import annotations

import operator
import pickle
import random

import fluvial
from fluvial import Pipeline, Sum, Tumbling
from fluvial.engine.execute import Chunk, Executor
from fluvial.engine.plan import compile_plan

HORIZON = 10 * 60_000
PARTITIONS = 4
GENERATION_MS = 150_000
PER_GENERATION = 8_300
BATCH_MS = 5_000
PER_BATCH = 250


def test_state_is_flat_once_the_horizon_is_reached() -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    p = Pipeline("bounded")
    sums = (p.from_log("reading").map(lambda e: (e.device, e.payload["value"]))
            .window(Tumbling(length_ms=60_000), allowed_lateness_ms=30_000, idle_timeout_ms=60_000,
                    correction_horizon_ms=HORIZON).aggregate_by_key(Sum()))
    sums.to_view("sums")
    sums.map(lambda row: (row.key, row.value)).reduce_by_key(operator.add).to_view("downstream")  # keeps a table
    plan = compile_plan(p)
    source = plan.sources[0]
    agg = next(n for n in plan.nodes if n.op == "aggregate" and n.params["window"] is not None)
    pos = plan.index[agg.id]
    executor = Executor(plan, stream=True)
    t0 = 1_700_000_000_000
    seen: set[str] = set()
    last: dict[tuple[int, str], int] = {}
    sizes: list[tuple[int, int, int, int]] = []   # (minute, device highs, panes, checkpoint bytes)
    for b in range(60 * 60_000 // BATCH_MS):
        now = t0 + b * BATCH_MS
        generations = [g for g in (now // GENERATION_MS - 1, now // GENERATION_MS) if g >= t0 // GENERATION_MS]
        chunks: dict[int, list[Chunk]] = {}
        per_partition: dict[int, tuple[list[fluvial.Event], list[int], list[str]]] = {}
        for _ in range(PER_BATCH):
            device = f"g{rnd.choice(generations)}-{rnd.randrange(PER_GENERATION)}"
            ts = now + rnd.randrange(BATCH_MS) - (rnd.randrange(90_000) if rnd.random() < 0.02 else 0)
            part = hash(device) % PARTITIONS
            evs, tss, devs = per_partition.setdefault(part, ([], [], []))
            evs.append(fluvial.Event(device=device, kind="reading", ts=ts, seq=1, payload={"value": 1}))
            tss.append(ts)
            devs.append(device)
            seen.add(device)
        for part, (got, stamps, ids) in sorted(per_partition.items()):
            order = sorted(range(len(got)), key=lambda i: stamps[i] if rnd.random() < 0.9 else 0)
            evs, tss, devs = [got[i] for i in order], [stamps[i] for i in order], [ids[i] for i in order]
            chunks.setdefault(source.id, []).append(Chunk((plan.index[source.id], part), evs, tss, devs))
            for d, t in zip(devs, tss):
                last[(part, d)] = max(last.get((part, d), t), t)
        executor.run(chunks, batch_time_ms=now, stamp=(1, b))
        if b % 36 == 35:   # every 3 simulated minutes
            highs = executor.state.watermarks[pos]
            devices = sum(1 for k in highs if isinstance(k, tuple) and isinstance(k[0], tuple))
            panes = sum(len(w) for w in executor.state.tables.get(pos, {}).values())
            sizes.append((b * BATCH_MS // 60_000, devices, panes, len(pickle.dumps(executor.state))))
    print("minute, device highs, panes, checkpoint bytes:", sizes)
    print(f"devices seen: {len(seen)}")
    assert len(seen) > 10**5
    highs = executor.state.watermarks[pos]
    part_high = {origin[1]: h for origin, h in highs.items() if not isinstance(origin[0], tuple)}
    want = {(part, d) for (part, d), t in last.items() if t >= part_high[part] - HORIZON}
    got = {(k[0][1], k[1]) for k in highs if isinstance(k[0], tuple)}
    assert got == want   # exactly the devices within the horizon (brute force)
    after = [s for s in sizes if s[0] >= 20]   # the horizon (10 min) and a generation's life (5 min) are behind
    assert max(s[1] for s in after) < 1.3 * min(s[1] for s in after)
    assert max(s[2] for s in after) < 1.3 * min(s[2] for s in after)
    assert max(s[3] for s in after) < 1.3 * min(s[3] for s in after)
    assert after[-1][1] < len(seen) / 3
