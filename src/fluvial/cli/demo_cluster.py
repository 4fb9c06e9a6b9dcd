"""``fluvial demo --cluster``: fluvial beyond one machine, on this machine.

Starts, as separate processes: a 3-node NATS JetStream cluster (the installed
``nats-server``; the log's streams replicated 3 times), two ``fluvial serve``
ingest nodes (HTTP ingest and queries, ``--speed-layer workers``) and two
``fluvial worker`` processes sharing the partitions of ``device_stats``; the
views go to PostgreSQL (``--store``, a fresh schema, dropped at the end).
Simulated devices post to both ingest nodes and fail over between them.

Every 5 s it prints what came in on each node, which worker owns which
partitions, which NATS nodes run, and what the view says.  Kill any process
it lists (``kill -9 PID``): the devices fail over, a worker takes the dead
one's partitions, NATS elects new leaders; restart nothing, or let the demo
restart what you killed (``--restart``).  At the end it checks that nothing
was lost or counted twice: every acknowledged event is in the log once and
counted once in ``device_stats``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fluvial.errors import ConfigError, FluvialError

FLOW = "device_stats.py"
VIEW = "device_stats"
DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/postgres"
TICK_S = 5.0


class Child:
    """One process of the demo; its output lines go to ``on_line`` (and a log file)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_file: Path,
                 on_line: Callable[[Child, str], None]) -> None:
        self.name, self.args, self.env, self.log_file, self.on_line = name, args, env, log_file, on_line
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        threading.Thread(target=self._relay, args=(self.proc,), daemon=True, name=f"demo-{self.name}").start()

    def _relay(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with self.log_file.open("a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                self.on_line(self, line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_cluster_demo(args: argparse.Namespace, home: Path, examples: Path) -> int:
    """The demo; ``home`` is a fresh demo directory."""
    from fluvial.log.nats.local_cluster import LocalNatsCluster, free_ports
    from fluvial.simulate import Simulator

    if args.devices < 1 or args.rate <= 0:
        raise ConfigError("--devices must be >= 1 and --rate > 0")
    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
    schema = f"fluvial_demo_{secrets.token_hex(4)}"
    base = args.store if args.store and args.store.startswith("postgresql://") else DEFAULT_STORE
    if "schema=" in base:
        raise ConfigError(f"--store {base}: the demo makes a schema of its own; give the server and database only")
    store_url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    _check_store(store_url)
    flow = str((examples / FLOW).resolve())
    say_lock = threading.Lock()
    owns: dict[str, str] = {}

    def say(line: str) -> None:
        with say_lock:
            print(line, flush=True)

    def on_line(child: Child, line: str) -> None:
        if "owns partitions" in line or "stopped after" in line:
            what = line.split(": ", 1)[-1]   # after "worker pid N on HOST (COMMAND)"
            owns[child.name] = what if "owns" in line else "stopped"
            say(f"  [{child.name} pid {child.pid}] {what}")
        elif "error" in line.lower() or "Traceback" in line:
            say(f"  [{child.name}] {line}")

    cluster = LocalNatsCluster(home / "nats", nodes=3, name="fluvialdemo")
    children: list[Child] = []
    sim: Any = None
    devices: threading.Thread | None = None
    reports: list[Any] = []   # the simulator's, once it stopped
    stop = threading.Event()
    try:
        cluster.start()
        cluster.wait_ready()
        log_url = cluster.url("demo", replicas=3)
        env = {**os.environ, "FLUVIAL_LOG": log_url, "FLUVIAL_STORE": store_url}
        me = [sys.executable, "-m", "fluvial.cli.main"]
        ports = free_ports(2) if args.port == 0 else [args.port, args.port + 1]
        for i, port in enumerate(ports, 1):
            node = home / f"ingest{i}"
            node.mkdir()
            children.append(Child(f"ingest {i}", [*me, "--data-dir", str(node), "serve", "--port", str(port),
                                                  "--flow", flow, "--speed-layer", "workers", "--batch-every", "0"],
                                  env, home / f"ingest{i}.log", on_line))
        for i in (1, 2):
            children.append(Child(f"worker {i}", [*me, "--data-dir", str(home / f"worker{i}"), "worker", flow,
                                                  "--batch-interval-ms", "200", "--lease-ms", "3000"],
                                  env, home / f"worker{i}.log", on_line))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for child in children[:2]:   # the ingest nodes create the log's streams
            child.start()
        _wait_healthy(urls, children[:2])
        for child in children[2:]:
            child.start()
        sim = Simulator(",".join(urls), devices=args.devices, rate=args.rate, seed=args.seed, record=True,
                        batch=max(1, min(500, int(args.rate // 5) or 1)), connections=2, offline_fraction=0.0)
        devices = threading.Thread(target=lambda: reports.append(sim.run(stop=stop)), name="fluvial-demo-devices",
                                   daemon=True)
        devices.start()
        _announce(say, cluster, children, urls, store_url, log_url, home, args)
        started = time.monotonic()
        tick = 0
        while args.seconds is None or time.monotonic() - started < args.seconds:
            time.sleep(min(TICK_S, max(0.1, (args.seconds or TICK_S) - (time.monotonic() - started))))
            tick += 1
            if args.restart:
                _restart_dead(say, cluster, children)
            _status(say, tick, sim, cluster, children, owns, store_url)
    except KeyboardInterrupt:
        say("stopping...")
    except BaseException:   # a process that failed to start: stop the others too, then say why
        stop.set()
        _clean_up(children, cluster, store_url)
        raise
    finally:
        stop.set()
    try:
        if devices is None:
            return 1
        devices.join(sim.drain_s + 30)   # the batches in flight get their answers
        return _final_check(say, reports[0], store_url, log_url, cluster, children)
    finally:
        _clean_up(children, cluster, store_url)


def _clean_up(children: list[Child], cluster: Any, store_url: str) -> None:
    """Stop every process the demo started and drop its schema."""
    for child in children:
        child.stop()
    cluster.stop()
    _drop_schema(store_url)


def _check_store(store_url: str) -> None:
    from fluvial.serving.postgres import PostgresStore

    try:
        PostgresStore(store_url).close()
    except FluvialError as exc:
        raise ConfigError(f"fluvial demo --cluster keeps its views in PostgreSQL: {exc}. Give a reachable "
                          f"server with --store postgresql://USER@HOST:PORT/DB") from None


def _wait_healthy(urls: list[str], children: list[Child], timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            dead = [c for c in children if not c.alive]
            if dead:
                raise FluvialError(f"{dead[0].name} exited at start; its output is in {dead[0].log_file}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status in (200, 503):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise FluvialError(f"{url} did not answer within {timeout:g} s")
            time.sleep(0.2)


def _announce(say: Callable[[str], None], cluster: Any, children: list[Child], urls: list[str], store_url: str,
              log_url: str, home: Path, args: argparse.Namespace) -> None:
    nats = "\n".join(f"    {name}  127.0.0.1:{port}  pid {cluster.procs[name].pid}"
                     for name, port in zip(cluster.names, cluster.client_ports, strict=True))
    procs = "\n".join(f"    {c.name:<9} pid {c.pid}" + (f"  {urls[i]}" if c.name.startswith("ingest") else "")
                      for i, c in enumerate(children))
    say(f"""fluvial demo --cluster: every part a process of its own, on this machine
  log:     NATS JetStream cluster, streams replicated 3 times: {log_url}
{nats}
  views:   PostgreSQL {store_url}
  ingest and speed layer:
{procs}
  devices: {args.devices} simulated devices posting {args.rate:g} events/s to both ingest nodes (failing over)

Try, in another terminal (the demo {'restarts what you kill' if args.restart else 'goes on without it'}):
  kill -9 {cluster.procs['n1'].pid}     # a NATS node: the streams keep a quorum
  kill -9 {children[2].pid}     # worker 1: worker 2 takes its partitions once its lease runs out
  kill -9 {children[0].pid}     # ingest 1: the devices fail over to ingest 2
  curl -sg '{urls[-1]}/v1/views/{VIEW}' | head -c 600
Outputs of every process: {home}/*.log. Stop with Ctrl-C{f" (or wait {args.seconds:g} s)" if args.seconds else ""};
at the end the demo checks that nothing acknowledged was lost or counted twice.
""")


def _restart_dead(say: Callable[[str], None], cluster: Any, children: list[Child]) -> None:
    for name in cluster.names:
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            cluster.procs.pop(name, None)
            cluster.start(name)
            say(f"  (restarted NATS node {name}: pid {cluster.procs[name].pid})")
    for child in children:
        if not child.alive:
            child.restarts += 1
            child.start()
            say(f"  (restarted {child.name}: pid {child.pid})")


def _status(say: Callable[[str], None], tick: int, sim: Any, cluster: Any, children: list[Child],
            owns: dict[str, str], store_url: str) -> None:
    from fluvial.serving.postgres import PostgresStore

    report = sim.progress()
    by_node = ", ".join(f"{url.rsplit(':', 1)[-1]}: {n:,}" for url, n in sorted(report.by_url.items()))
    nats = " ".join(f"{n}{'' if cluster.procs.get(n) and cluster.procs[n].poll() is None else '(down)'}"
                    for n in cluster.names)
    alive = " ".join(f"{c.name.replace(' ', '')}{'' if c.alive else '(down)'}" for c in children)
    try:
        with PostgresStore(store_url) as store:
            rows = store.query(VIEW)
        view = f"{VIEW}: {sum(r.value['count'] for r in rows):,} readings in {len(rows):,} rows"
    except FluvialError as exc:
        view = f"{VIEW}: not readable now ({str(exc)[:80]})"
    say(f"[{tick * TICK_S:>4.0f}s] acknowledged {report.accepted + report.duplicates:,} ({by_node}; "
        f"{report.failovers} failovers) | {view} | NATS {nats} | {alive}")
    for name in sorted(owns):
        say(f"         {name}: {owns[name]}")


def _final_check(say: Callable[[str], None], report: Any, store_url: str, log_url: str, cluster: Any,
                 children: list[Child]) -> int:
    """Wait for the views to catch up, then compare acknowledged, stored and counted events."""
    from fluvial.backends import open_log
    from fluvial.serving.postgres import PostgresStore

    acked = {tuple(a) for a in report.acked}
    for name in cluster.names:        # a quorum is needed to read: bring every node back
        if cluster.procs.get(name) is None or cluster.procs[name].poll() is not None:
            cluster.procs.pop(name, None)
            cluster.start(name)
    for child in children:
        if child.name.startswith("worker") and not child.alive:
            child.start()
    cluster.wait_ready()
    log = open_log(log_url, readonly=True)
    try:
        ids: list[tuple[str, int]] = []
        for p, end in enumerate(log.end_offsets()):
            offset = log.start_offsets()[p]
            while offset < end:
                batch = log.read(p, offset, max_records=50_000)
                ids += [(e.device, e.seq) for e in batch.events if e.kind == "reading"]
                offset = batch.next_offset
    finally:
        log.close()
    counted = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with PostgresStore(store_url) as store:
            counted = sum(r.value["count"] for r in store.query(VIEW))
        if counted == len(ids):
            break
        time.sleep(0.5)
    ok = len(ids) == len(set(ids)) and set(ids) == acked and counted == len(ids)
    say(f"\nnothing lost, nothing twice: {'yes' if ok else 'NO'} -- {len(acked):,} readings acknowledged "
        f"to the devices, {len(ids):,} in the log ({len(ids) - len(set(ids))} twice), {counted:,} counted "
        f"in {VIEW}; {report.failovers} failovers, {report.retries} retries")
    return 0 if ok else 1


def _drop_schema(store_url: str) -> None:
    from fluvial.serving.postgres.schema import connect, parse_url

    target = parse_url(store_url)
    try:
        conn = connect(target)
    except FluvialError:
        return
    try:
        from psycopg import sql

        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))
    finally:
        conn.close()

