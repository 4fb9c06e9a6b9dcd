"""PostgreSQL restarted under load while ``fluvial worker`` processes share a pipeline: they
ride it out and the views stay exact (issue 10: "PostgreSQL restarted under load: workers
resume, views exact").

A PostgreSQL server of the test's own (tests/pgserver.py) holds the views, checkpoints and
leases of two workers on a 4-partition file log.  While events are appended, the server is
killed (SIGKILL of the postmaster and every backend) and later shut down fast (SIGINT), each
at a random moment and restarted after a random pause.  The workers must not exit: they keep
what they hold, drop a partition whose commit failed, and take it again from its checkpoint
once the store is back.  Then every view equals the brute force over exactly the events the
log acknowledged, with nothing counted twice.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from test_workers import Group, check_exact, generate, wait_for

from pgserver import PgServer

pytestmark = [pytest.mark.slow, pytest.mark.explicit_backends]


def test_workers_ride_out_postgresql_restarts_views_exact(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rnd = random.Random(seed)
    print(f"seed={seed}")
    pg = PgServer()
    pg.start()
    events = generate(seed, 3_000)
    group = Group(tmp_path, f"{pg.url}?schema=workers")
    try:
        group.append(events[:600])
        workers = [group.start(), group.start()]
        for proc in workers:   # running (started, in the group) when the outages come
            wait_for(lambda proc=proc: bool(group.owns(proc)), "both workers own partitions")
        chunks = [events[i:i + 200] for i in range(600, len(events), 200)]
        outages = sorted(rnd.sample(range(1, len(chunks) - 1), 2))
        for n, chunk in enumerate(chunks):
            group.append(chunk)
            time.sleep(rnd.uniform(0.0, 0.4))
            if n in outages:
                if n == outages[0]:
                    pg.kill()
                else:
                    pg.stop()
                time.sleep(rnd.uniform(0.5, 3.0))   # events keep arriving in the log meanwhile
                pg.start()
        print(f"outages after chunks {outages}")
        check_exact(group)
        for proc in workers:
            assert proc.poll() is None, group.errors(proc)   # rode it out
    finally:
        group.stop_all()
        pg.close()
    for proc in group.procs:
        assert "Traceback" not in group.errors(proc), group.errors(proc)
