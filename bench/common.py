"""Shared machinery of the benchmarks: data, ingest, timing, the four sides, the report.

Every benchmark compares four ways to compute the same result:

* ``fluvial batch``  -- ``ws.batch_runner()`` (default workers) over the log;
* ``fluvial stream`` -- ``ws.stream_runner()`` (default micro-batches) over the
  log, from offset 0 until it has caught up;
* ``pyspark``        -- the same job as a Spark user writes it (RDD API, local[2]);
* ``plain python``   -- the tightest straightforward single-process program
  (``collections.Counter``, dicts, msgspec), no engine.

fluvial reads its log (ingested once beforehand: ingest is timed and reported
apart, not counted in the job).  PySpark and plain Python read the generated
file, parsing included.  PySpark's JVM/SparkSession start-up is reported apart.
Every side's result must equal the plain-Python result, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / "data"
RESULTS = BENCH / "results"
EXAMPLES = REPO / "examples"

# Targets of the issue (on the 2-core reference machine).
MIN_SPEEDUP_VS_SPARK = 5.0
MAX_SLOWDOWN_VS_PLAIN = 3.0
INGEST_BATCH = 10_000

PLAIN, BATCH, STREAM, SPARK = "plain python", "fluvial batch", "fluvial stream", "pyspark"
SIDES = (PLAIN, BATCH, STREAM, SPARK)
READS = {
    PLAIN: "the generated file (parse included)",
    BATCH: "its log (ingested beforehand, not timed)",
    STREAM: "its log (ingested beforehand, not timed)",
    SPARK: "the generated file (parse included; JVM start-up excluded)",
}


class ResultMismatch(AssertionError):
    """A side computed something else than the plain-Python reference."""


# -- command line ---------------------------------------------------------------------

def parser(description: str, default_records: int, unit: str = "records") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--records", type=int, default=default_records,
                    help=f"size of the generated input ({unit}; default {default_records})")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; the median is reported")
    ap.add_argument("--sides", default=",".join(SIDES),
                    help=f"comma-separated subset of: {', '.join(SIDES)}")
    ap.add_argument("--workers", type=int, default=None,
                    help="batch runner workers (default: the runner's default, the machine's cores)")
    ap.add_argument("--keep", action="store_true", help="keep the fluvial data directory afterwards")
    return ap


def chosen_sides(arg: str) -> list[str]:
    sides = [s.strip() for s in arg.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        raise SystemExit(f"unknown side(s) {unknown}; choose from {', '.join(SIDES)}")
    if PLAIN not in sides:
        sides.insert(0, PLAIN)  # the reference every other side is checked against
    return [s for s in SIDES if s in sides]


# -- input data -----------------------------------------------------------------------

def dataset(kind: str, n: int, suffix: str) -> Path:
    """The input file ``fluvial generate KIND N`` writes (default seed), made once and cached
    in bench/data (the same bytes as the retired ``gen.py``, so cached files stay valid)."""
    from fluvial.generate import write

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{kind}-{n}.{suffix}"
    if path.exists():
        return path
    tmp = path.with_suffix(path.suffix + ".tmp")
    print(f"generating {path.name} (fluvial generate {kind} {n}) ...", flush=True)
    started = time.perf_counter()
    with open(tmp, "wb") as out:
        write(kind, n, out)
    os.replace(tmp, path)
    print(f"  {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def load_example(name: str) -> ModuleType | None:
    """examples/<name>.py as a module (what users run), or None if it does not exist yet."""
    path = EXAMPLES / f"{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"fluvial_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- fluvial ------------------------------------------------------------------------------

def ingest(data_dir: Path, events: Iterable[Any]) -> tuple[int, float]:
    """Append ``events`` to the log of a fresh data directory; returns (records, seconds)."""
    import fluvial

    if data_dir.exists():
        shutil.rmtree(data_dir)
    started = time.perf_counter()
    n = 0
    with fluvial.open(data_dir, writer=True) as ws:
        batch: list[Any] = []
        for ev in events:
            batch.append(ev)
            if len(batch) == INGEST_BATCH:
                n += ws.log.append(batch).accepted
                batch = []
        if batch:
            n += ws.log.append(batch).accepted
    return n, time.perf_counter() - started


def json_lines(path: Path) -> Iterator[Any]:
    import msgspec

    decode = msgspec.json.Decoder().decode
    with open(path, "rb") as f:
        for line in f:
            yield decode(line)


def _reset_store(data_dir: Path) -> None:
    for name in ("views.db", "views.db-wal", "views.db-shm", "views.db-journal"):
        (data_dir / name).unlink(missing_ok=True)


def run_fluvial(data_dir: Path, pipeline: Any, view: str, mode: str, *,
                workers: int | None = None) -> tuple[float, int, list[Any]]:
    """One timed run of ``pipeline`` on a fresh serving store; returns
    (seconds, records read, rows of ``view``).  Only ``runner.run`` is timed."""
    import fluvial

    _reset_store(data_dir)
    with fluvial.open(data_dir) as ws:   # a reader: the log was ingested before
        if mode == "batch":
            runner = ws.batch_runner(progress=False) if workers is None else \
                ws.batch_runner(workers=workers, progress=False)
            kwargs: dict[str, Any] = {}
        else:
            runner = ws.stream_runner()
            kwargs = {"until_caught_up": True}
        gc.collect()
        started = time.perf_counter()
        stats = runner.run(pipeline, **kwargs)
        seconds = time.perf_counter() - started
        rows = ws.store.query(view)
    return seconds, stats.records_in, rows


# -- pyspark -------------------------------------------------------------------------------

def spark_context(cores: int = 2) -> tuple[Any, float]:
    """A local[cores] SparkContext and its start-up time (JVM + session)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    started = time.perf_counter()
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("fluvial-bench")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    sc.parallelize([0], 1).count()  # the first job starts the Python workers
    return sc, time.perf_counter() - started


# -- timing and report ------------------------------------------------------------------------

@dataclass
class Side:
    name: str
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Bench:
    """Collects the timings of one benchmark and prints/writes the report."""

    name: str
    records: int
    unit: str
    input_file: Path
    sides: dict[str, Side] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def time(self, side: str, repeat: int, run: Callable[[], tuple[float, Any]],
             check: Callable[[Any], None]) -> None:
        """Run ``run`` ``repeat`` times (it returns (seconds, result)); check every result."""
        entry = self.sides.setdefault(side, Side(side))
        for i in range(repeat):
            seconds, result = run()
            check(result)
            entry.times.append(seconds)
            print(f"  {side:<15} run {i + 1}/{repeat}: {seconds:8.3f} s  "
                  f"({self.records / seconds:,.0f} {self.unit}/s)  result checked", flush=True)

    def verdicts(self) -> dict[str, dict[str, Any]]:
        out = {}
        plain = self.sides.get(PLAIN)
        spark = self.sides.get(SPARK)
        for side in (BATCH, STREAM):
            if side not in self.sides:
                continue
            t = self.sides[side].median
            v: dict[str, Any] = {}
            if plain:
                slow = t / plain.median
                v["slowdown_vs_plain"] = slow
                v["plain_target_met"] = slow <= MAX_SLOWDOWN_VS_PLAIN
            if spark:
                fast = spark.median / t
                v["speedup_vs_spark"] = fast
                v["spark_target_met"] = fast >= MIN_SPEEDUP_VS_SPARK
            out[side] = v
        return out

    def report(self) -> dict[str, Any]:
        plain = self.sides.get(PLAIN)
        spark = self.sides.get(SPARK)
        print()
        print(f"== {self.name}: {self.records:,} {self.unit} from {self.input_file.name} "
              f"(median of {max(len(s.times) for s in self.sides.values())} runs)")
        print(f"{'side':<16}{'median s':>10}{self.unit + '/s':>14}{'x plain':>10}{'spark/x':>10}   reads")
        for name in SIDES:
            if name not in self.sides:
                continue
            t = self.sides[name].median
            vs_plain = f"{t / plain.median:.2f}" if plain else "-"
            vs_spark = f"{spark.median / t:.2f}" if spark else "-"
            print(f"{name:<16}{t:>10.3f}{self.records / t:>14,.0f}{vs_plain:>10}{vs_spark:>10}   {READS[name]}")
        print("  x plain = seconds / plain-Python seconds (lower is better; target <= "
              f"{MAX_SLOWDOWN_VS_PLAIN:g}); spark/x = PySpark seconds / seconds (higher is better; "
              f"target >= {MIN_SPEEDUP_VS_SPARK:g})")
        for key, value in self.notes.items():
            print(f"  {key}: {value}")
        verdicts = self.verdicts()
        for side, v in verdicts.items():
            parts = []
            if "plain_target_met" in v:
                parts.append(f"{'PASS' if v['plain_target_met'] else 'MISS'} <= {MAX_SLOWDOWN_VS_PLAIN:g}x plain "
                             f"({v['slowdown_vs_plain']:.2f}x)")
            if "spark_target_met" in v:
                parts.append(f"{'PASS' if v['spark_target_met'] else 'MISS'} >= {MIN_SPEEDUP_VS_SPARK:g}x faster "
                             f"than PySpark ({v['speedup_vs_spark']:.2f}x)")
            print(f"  verdict {side}: " + "; ".join(parts))
        doc = {
            "benchmark": self.name,
            "records": self.records,
            "unit": self.unit,
            "input": str(self.input_file),
            "reads": {k: READS[k] for k in self.sides},
            "sides": {k: {"times_s": s.times, "median_s": s.median, "records_per_s": self.records / s.median}
                      for k, s in self.sides.items()},
            "verdicts": verdicts,
            "notes": self.notes,
            "machine": machine(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_result(self.name, doc)
        return doc


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(), "git": git_head()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def git_head() -> str:
    """The commit measured (other work may be in the tree: ``+dirty`` says so)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "examples"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def write_result(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"  wrote {path.relative_to(REPO)}")
    return path


# -- result checks -------------------------------------------------------------------------------

def check_equal(side: str, got: dict[Any, Any], want: dict[Any, Any], *,
                close: Callable[[Any, Any], bool] | None = None) -> None:
    """Fail loudly unless ``got`` equals ``want`` (``close`` compares values when given)."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and not (close(got[k], want[k]) if close else got[k] == want[k])]
    if missing or extra or wrong:
        lines = [f"{side}: result differs from plain Python: {len(missing)} keys missing, "
                 f"{len(extra)} extra, {len(wrong)} different values (of {len(want)})"]
        for k in missing[:3]:
            lines.append(f"  missing {k!r}: want {want[k]!r}")
        for k in extra[:3]:
            lines.append(f"  extra   {k!r}: got {got[k]!r}")
        for k in wrong[:3]:
            lines.append(f"  differs {k!r}: got {got[k]!r}, want {want[k]!r}")
        raise ResultMismatch("\n".join(lines))


def rel_close(a: float, b: float, rel: float = 1e-9) -> bool:
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


# -- one benchmark, start to end -------------------------------------------------------------------

@dataclass
class Job:
    """What a benchmark module supplies; :func:`main` does the rest.

    Attributes:
        name: Benchmark name (results file ``bench/results/<name>.json``).
        gen_kind: ``fluvial generate`` kind of the input; ``suffix`` the file extension.
        unit: What a record is (lines, tweets, readings).
        pipeline: Returns the fluvial pipeline under test and the view it writes.
        events: Log events ingested from the generated file (for the fluvial sides).
        plain: The plain-Python program: file -> result (the reference).
        spark: The PySpark job: (SparkContext, file) -> result.
        from_rows: Turns the fluvial view's rows into a result comparable with ``plain``'s.
        spark_close: Value comparison for the PySpark side only (default: exact).
    """

    name: str
    gen_kind: str
    suffix: str
    unit: str
    pipeline: Callable[[], tuple[Any, str]]
    events: Callable[[Path], Iterable[Any]]
    plain: Callable[[Path], dict[Any, Any]]
    spark: Callable[[Any, Path], dict[Any, Any]]
    from_rows: Callable[[list[Any]], dict[Any, Any]]
    spark_close: Callable[[Any, Any], bool] | None = None
    describe: Callable[[dict[Any, Any]], str] | None = None


def _timed(f: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    out = f()
    return time.perf_counter() - started, out


def main(job: Job, description: str, default_records: int, size_unit: str | None = None) -> dict[str, Any]:
    args = parser(description, default_records, unit=size_unit or job.unit).parse_args()
    sides = chosen_sides(args.sides)
    path = dataset(job.gen_kind, args.records, job.suffix)
    with open(path, "rb") as f:
        records = sum(1 for _ in f)
    bench = Bench(job.name, records, job.unit, path)
    bench.notes["input"] = f"{path} ({path.stat().st_size / 1e6:.1f} MB, {records:,} {job.unit})"
    print(f"{job.name}: {bench.notes['input']} at {git_head()}", flush=True)

    ref: dict[Any, Any] = {}

    def check_plain(out: dict[Any, Any]) -> None:
        if not ref:
            ref.update(out)
        check_equal(PLAIN, out, ref)

    bench.time(PLAIN, args.repeat, lambda: _timed(lambda: job.plain(path)), check_plain)
    if job.describe is not None:
        bench.notes["result"] = job.describe(ref)

    data_dir = DATA / f"fluvial-{job.name}"
    if BATCH in sides or STREAM in sides:
        n, secs = ingest(data_dir, job.events(path))
        bench.notes["ingest (not in job time)"] = f"{n:,} events in {secs:.2f} s ({n / secs:,.0f} events/s)"
        print(f"  ingest          {n:,} events in {secs:.2f} s (not counted in the job)", flush=True)
        if n != records:
            raise ResultMismatch(f"ingest stored {n} events, the file has {records} records")
        flow, view = job.pipeline()
        for side, mode in ((BATCH, "batch"), (STREAM, "stream")):
            if side not in sides:
                continue

            def run(mode: str = mode) -> tuple[float, dict[Any, Any]]:
                secs, read, rows = run_fluvial(data_dir, flow, view, mode, workers=args.workers)
                if read != records:
                    raise ResultMismatch(f"fluvial {mode} read {read} records, the log holds {records}")
                return secs, job.from_rows(rows)

            bench.time(side, args.repeat, run, lambda out, side=side: check_equal(side, out, ref))

    if SPARK in sides:
        sc, startup = spark_context()
        bench.notes["pyspark start-up (not in job time)"] = f"{startup:.1f} s (JVM, SparkSession, first Python worker)"
        try:
            bench.time(SPARK, args.repeat, lambda: _timed(lambda: job.spark(sc, path)),
                       lambda out: check_equal(SPARK, out, ref, close=job.spark_close))
        finally:
            sc.stop()
    doc = bench.report()
    if not args.keep and data_dir.exists():
        shutil.rmtree(data_dir)
    return doc
