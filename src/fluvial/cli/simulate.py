"""``fluvial simulate``: a fleet of simulated devices POSTing events to a fluvial server."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

from fluvial.cli.app import arg, subcommand
from fluvial.cli.fmt import iso, time_arg
from fluvial.simulate import FORMATS, KINDS, MAX_BATCH, Simulator, SimulatorReport

_DESCRIPTION = f"""\
Simulate DEVICES sensor devices (dev-0000, ...) and/or tweeting users
(user-000, ...) and POST their events to URL/v1/events in batches, RATE events
per second in all (split evenly between the kinds). The same options, --seed
and --start included, send exactly the same events.

Readings come from 2 to 4 sensors per device (baseline, noise, slow drift).
Some devices go offline for 30-120 s and flush their backlog when they come
back, so the server gets out-of-order and late events. Tweets carry hashtags
with a Zipf-like popularity.

Delivery: a batch is resent with the same seqs (the server keeps one copy)
after 429/503 (after Retry-After) and after connection errors (exponential
backoff, at most 5 s); other 4xx answers drop the batch and count it.

Runs until --duration or Ctrl-C, then prints a summary: sent, accepted,
duplicates, rejected, dropped, retries, achieved rate. Exit code 1 when
nothing was delivered but something failed.

Kinds: {", ".join(KINDS)}.  Formats: {", ".join(FORMATS)}."""


def _number(kind: Callable[[str], float], low: float, high: float | None = None
            ) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= (high if high is not None else float("inf")):
            bounds = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(float, 0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {', '.join(unknown) or '(none)'}: "
                                         f"choose among {', '.join(KINDS)}, comma-separated")
    return kinds


@subcommand(
    "simulate",
    summary="send simulated device readings and tweets to a fluvial server",
    description=_DESCRIPTION,
    example="fluvial simulate --url http://127.0.0.1:8000 --devices 100 --rate 2000 --duration 60\n"
            "fluvial simulate --url http://127.0.0.1:8000 --devices 500 --rate 5000 "
            "--kinds reading,tweet --token \"$TOKEN\"",
    args=[
        arg("--url", required=True, metavar="URL[,URL...]",
            help="the server's base URL, http:// or https://; several ingest nodes of one log, "
                 "comma-separated: the connections start on different ones, and a batch that fails "
                 "on one goes to the next"),
        arg("--devices", required=True, type=_number(int, 1), metavar="N",
            help="how many sensor devices (>= 1)"),
        arg("--rate", required=True, type=_positive, metavar="EVENTS_PER_S",
            help="events per second, all devices and kinds together (> 0)"),
        arg("--kinds", type=_kinds, default=("reading",), metavar="K[,K]",
            help=f"event kinds among {', '.join(KINDS)} (default: reading)"),
        arg("--duration", type=_positive, metavar="S",
            help="stop after S seconds (default: run until Ctrl-C)"),
        arg("--batch", type=_number(int, 1, MAX_BATCH), default=500, metavar="N",
            help=f"events per request, 1..{MAX_BATCH} (default: %(default)s)"),
        arg("--seed", type=int, default=0, metavar="S", help="random seed (default: %(default)s)"),
        arg("--start", type=time_arg, metavar="T",
            help="ts of the first events, epoch ms or ISO-8601 (default: now)"),
        arg("--first-seq", type=_number(int, 0), default=0, metavar="N",
            help="first seq of every device (default: %(default)s); the server keeps one copy of a "
                 "(device, seq), so a new run against the same server needs a larger N"),
        arg("--token", metavar="T", help="send Authorization: Bearer T"),
        arg("--no-gzip", dest="gzip", action="store_false", help="do not compress request bodies"),
        arg("--format", choices=tuple(FORMATS), default="json",
            help="request body format (default: %(default)s)"),
        arg("--offline-fraction", type=_fraction, default=0.02, metavar="F",
            help="share of devices offline at any time, in [0, 1) (default: %(default)s)"),
        arg("--connections", type=_number(int, 1, 64), default=1, metavar="N",
            help="parallel keep-alive connections (default: %(default)s)"),
    ],
)
def simulate(args: argparse.Namespace) -> int:
    sim = Simulator(args.url, devices=int(args.devices), rate=args.rate, kinds=args.kinds,
                    batch=int(args.batch), seed=args.seed, token=args.token, gzip=args.gzip,
                    fmt=args.format, offline_fraction=args.offline_fraction, start_ms=args.start,
                    first_seq=int(args.first_seq), connections=int(args.connections))
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    print(f"simulating {args.devices:,} devices, {args.rate:g} events/s ({', '.join(args.kinds)}) "
          f"-> {args.url} {until}; seed {args.seed}, start {iso(sim.start_ms)}", file=sys.stderr)
    report = _run(sim, args.duration, show_progress=sys.stderr.isatty())
    print(_summary(report))
    delivered = report.accepted + report.duplicates + report.rejected
    if delivered == 0 and (report.dropped or report.unsent):
        print(f"error: nothing was delivered: {report.last_error or 'the server did not answer'}",
              file=sys.stderr)
        return 1
    if report.duplicates and not report.accepted:
        print("note: the server already had every event: it keeps one copy of a (device, seq), and "
              f"seqs start at {args.first_seq} in each run; give --first-seq beyond the last run's seqs "
              "to store new events", file=sys.stderr)
    if report.last_error and args.verbose:
        print(f"last error: {report.last_error}", file=sys.stderr)
    return 0


def _run(sim: Simulator, duration_s: float | None, *, show_progress: bool) -> SimulatorReport:
    """Run in a thread so that Ctrl-C stops the fleet and still gets a report."""
    stop, done = threading.Event(), threading.Event()
    outcome: list[SimulatorReport | BaseException] = []

    def target() -> None:
        try:
            outcome.append(sim.run(duration_s, stop))
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)
        finally:
            done.set()

    # waits on an Event, not Thread.join: on Python < 3.13 a join interrupted by Ctrl-C
    # marks the thread finished while it still runs
    threading.Thread(target=target, name="fluvial-simulate", daemon=True).start()
    try:
        while not done.wait(1.0):
            if show_progress:
                print("\r" + _progress(sim.progress()) + "\x1b[K", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        stop.set()
        if show_progress:
            print("\r\x1b[K", end="", file=sys.stderr)
        print(f"stopping: sending what is queued (at most {sim.drain_s:g} s; Ctrl-C again to quit)",
              file=sys.stderr)
        done.wait()
    if show_progress:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _progress(r: SimulatorReport) -> str:
    line = (f"{r.elapsed_s:6.0f} s  sent {r.sent:,} ({r.rate:,.0f}/s)  accepted {r.accepted:,}  "
            f"dup {r.duplicates:,}  rejected {r.rejected:,}  dropped {r.dropped:,}  retries {r.retries:,}")
    if r.last_error and (r.retries or r.dropped):
        line += f"  last: {r.last_error[:60]}"
    return line


def _summary(r: SimulatorReport) -> str:
    rows = [
        ("sent", r.sent, f"in {r.batches:,} batches, {r.elapsed_s:.1f} s: {r.rate:,.1f} events/s"),
        ("accepted", r.accepted, ""),
        ("duplicates", r.duplicates, "the server had them already (a resend, or an earlier run)"),
        ("rejected", r.rejected, "invalid events"),
        ("dropped", r.dropped, f"{r.dropped_batches:,} batches refused (4xx)"),
        ("retries", r.retries, f"{r.throttled:,} after 429/503, {r.retries - r.throttled:,} after errors"),
    ]
    if r.failovers or len(r.by_url) > 1:
        rows.append(("failovers", r.failovers, "resends that went to the next server"))
        rows += [(f"  {url}", n, "acknowledged there") for url, n in sorted(r.by_url.items())]
    if r.unsent:
        rows.append(("unsent", r.unsent, "still queued when the run ended"))
    if r.buffered or r.buffer_dropped:
        rows.append(("offline", r.buffered, f"held by offline devices; {r.buffer_dropped:,} dropped "
                                            "from full buffers"))
    width = max(len(f"{n:,}") for _, n, _ in rows)
    label = max(11, *(len(name) for name, _, _ in rows))
    lines = [f"{name:<{label}} {n:>{width},}  {note}".rstrip() for name, n, note in rows]
    if r.last_error and (r.dropped or r.unsent or r.rejected):
        lines.append(f"last error: {r.last_error}")
    return "\n".join(lines)

