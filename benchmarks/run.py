"""Our partition vs the seed pipeline, side by side, on the same generated months served from the
same loopback mirror. Prints time, peak RSS and file size for each, and the ratios.

    python benchmarks/run.py                     # both yellow sizes: 1,369,765 and 7,667,792 rows,
                                                 # and the fixed part of the steps (a line through both)
    python benchmarks/run.py --rows 1369765      # one size
    python benchmarks/run.py --rows --fhv-rows 23143222 --repeat 3   # only fhv 2019-01, the biggest month
    python benchmarks/run.py --repeat 3 --skip-seed                  # medians of 3 runs of ours, no seed
    python benchmarks/run.py --backfill 93       # also: per-run overhead over 93 small partitions
    python benchmarks/run.py --skip-seed --instance production   # ours on the production instance's storage

Ours is measured only through the public CLI (`dagster asset materialize`) and the published file
`$TAXI_DATA_DIR/lake/data/{color}/{color}_tripdata_{YYYY-MM}.parquet`, each repetition with a fresh
TAXI_DATA_DIR and DAGSTER_HOME. The package measured is the `taxi_assets` this script imports, so an
older checkout is measured with `PYTHONPATH=/path/to/checkout python benchmarks/run.py ...`.
The seed pipeline knows only yellow and green: fhv months are ours only.

Generated files are cached in --workdir (default ./bench, ignored by git).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate  # noqa: E402

import taxi_assets  # noqa: E402
from taxi_assets.mirror import serve_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The checkout whose package is measured: `dagster -m` puts its working directory first on sys.path,
# so the CLI runs there (with PYTHONPATH=/work/before, that is /work/before, not this repository).
PACKAGE_ROOT = Path(taxi_assets.__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
YELLOW_MONTH = "2021-01"
FHV_MONTH = "2019-01"
# What a run's instance needs beyond a fresh DAGSTER_HOME: nothing for SQLite (Dagster's default,
# as `dagster asset materialize` finds it), a fresh PostgreSQL database for --instance production.
INSTANCE_ENV: Callable[[Path], dict[str, str]] = lambda home: {}  # noqa: E731
STEP_DONE = re.compile(r'Finished execution of step "(\w+)" in ([\d.]+)(ms|s|m)')


@dataclass
class Measured:
    """One measured run: wall time, peak RSS, seconds per step, the Parquet's size, what it printed."""

    wall: float
    peak_rss_mb: float
    steps: dict[str, float] = field(default_factory=dict)
    parquet_bytes: int = 0
    output: str = ""

    @property
    def work(self) -> float:
        """Seconds spent in the steps themselves (wall time less start-up and hand-offs)."""
        return sum(self.steps.values())


# Runs the measured command as its child and writes the child's own peak RSS (KiB) to argv[1].
# Why a go-between: Linux carries a process's peak RSS over fork and exec (ru_maxrss is the
# larger of the old and the new address space's), so a command forked by this benchmark, which
# may have just generated a 20M-row file, would report the generator's peak as its own (issue 26:
# 5,015 MB printed for a run that peaks at 558 MB). Started with -I -S, this process is ~10 MB.
PEAK_OF_CHILD = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> tuple[float, float, str]:
    """Run a command; its wall time, its own peak RSS (MB, of the process and its waited children,
    not this benchmark's: see PEAK_OF_CHILD) and its output."""
    peak_file = log.with_suffix(".peak")
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", PEAK_OF_CHILD, str(peak_file), *cmd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        process.wait()
        wall = time.perf_counter() - started
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({process.returncode}); see {log}:\n{text[-3000:]}")
    return wall, int(peak_file.read_text()) / 1024, text


def seed(url: str, work: Path) -> Measured:
    """Run the seed pipeline on the file at `url` in a process of its own, measured."""
    out = work / "seed_out"
    wall, rss, text = run_measured(
        [sys.executable, str(ROOT / "benchmarks" / "seed_pipeline.py"), url, str(out)],
        dict(os.environ),
        work / "seed.log",
    )
    result = json.loads(text.strip().splitlines()[-1])
    return Measured(wall, rss, result["seconds"], Path(result["path"]).stat().st_size)


def ours(base_url: str, work: Path, color: str, month: str, log: Path) -> Measured:
    """One run of our partition `{color}|{month}-01`, in a fresh data dir and Dagster instance under `work`."""
    data = work / "ours_data"
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TAXI_TARGET": "local",
        "TAXI_DATA_DIR": str(data),
        "TAXI_SOURCE_URL": base_url,
        "DAGSTER_HOME": str(home),
    }
    env.pop("TAXI_WORK_DIR", None)  # default: under TAXI_DATA_DIR, fresh for each run
    env.update(INSTANCE_ENV(home))
    cmd = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "taxi_assets.definitions",
        "--select",
        "*bq_rides_table",
        "--partition",
        f"{color}|{month}-01",
    ]
    wall, rss, text = run_measured(cmd, env, log, cwd=PACKAGE_ROOT)
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}
    steps = {name: float(value) * unit[u] for name, value, u in STEP_DONE.findall(text)}
    parquet = data / "lake" / "data" / color / f"{color}_tripdata_{month}.parquet"
    return Measured(wall, rss, steps, parquet.stat().st_size, text)


@dataclass
class Repeated:
    """Medians over repeated runs of ours (each figure on its own), and the spread of the wall time."""

    runs: list[Measured]

    @property
    def median(self) -> Measured:
        """Each figure's median over the runs, as one Measured."""
        names = list(dict.fromkeys(name for run in self.runs for name in run.steps))
        steps = {name: statistics.median(run.steps[name] for run in self.runs if name in run.steps) for name in names}
        return Measured(
            wall=statistics.median(run.wall for run in self.runs),
            peak_rss_mb=statistics.median(run.peak_rss_mb for run in self.runs),
            steps=steps,
            parquet_bytes=int(statistics.median(run.parquet_bytes for run in self.runs)),
        )

    @property
    def work(self) -> float:
        """Median of each run's sum of steps (not the sum of the step medians)."""
        return statistics.median(run.work for run in self.runs)

    def line(self) -> str:
        """One printed line: the medians, and the spread of the wall time."""
        m = self.median
        walls = [run.wall for run in self.runs]
        steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in m.steps.items())
        return (
            f"ours median of {len(self.runs)}: {steps}; "
            f"wall {m.wall:.1f} s (min {min(walls):.1f}, max {max(walls):.1f}); "
            f"peak RSS {m.peak_rss_mb:.0f} MB; Parquet {m.parquet_bytes / 1e6:.1f} MB"
        )


def ours_repeated(base_url: str, workdir: Path, color: str, month: str, rows: int, repeat: int) -> Repeated:
    """`repeat` runs of ours; each one's Dagster output is kept in {workdir}/logs."""
    runs = []
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    for i in range(repeat):
        # A fresh TAXI_DATA_DIR and DAGSTER_HOME each time: no cached raw download, no run history.
        with tempfile.TemporaryDirectory(dir=workdir, prefix=f"ours_{color}_") as tmp:
            runs.append(ours(base_url, Path(tmp), color, month, logs / f"ours_{color}_{month}_{rows}_{i + 1}.log"))
        print(f"  run {i + 1}/{repeat}: wall {runs[-1].wall:.1f} s, peak RSS {runs[-1].peak_rss_mb:.0f} MB", flush=True)
    return Repeated(runs)


def source_file(workdir: Path, color: str, month: str, rows: int) -> Path:
    """The generated month, cached: mirror_{rows} for yellow (as before), mirror_fhv_{rows} for fhv."""
    mirror = workdir / (f"mirror_{rows}" if color == "yellow" else f"mirror_{color}_{rows}")
    source = mirror / color / f"{color}_tripdata_{month}.csv.gz"
    if not source.exists():
        print(f"generating {rows:,} {color} rows -> {source} ...", flush=True)
        started = time.perf_counter()
        generate(source, rows, dt.date.fromisoformat(f"{month}-01"), color=color)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return source


def fixed_cost(measured: dict[int, Repeated]) -> None:
    """The fixed part of a partition's steps: per step, the line through its median times at the
    sizes measured (least squares over more than two), read at 0 rows; and the part that grows."""
    sizes = sorted(measured)
    names = list(dict.fromkeys(name for r in measured.values() for name in r.median.steps))
    fits = {}
    for name in names:
        xs = [n / 1e6 for n in sizes]
        ys = [measured[n].median.steps.get(name, 0.0) for n in sizes]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        fits[name] = (mean_y - slope * mean_x, slope)
    fixed, per_million = sum(f[0] for f in fits.values()), sum(f[1] for f in fits.values())
    print(f"\n== fixed cost: the steps' time as a line through {', '.join(f'{n:,}' for n in sizes)} rows ==")
    print(f"fixed part of a partition's steps: {fixed:.2f} s; per million rows: {per_million:.2f} s")
    print("  " + ", ".join(f"{name} {a:+.2f} s + {b:.2f} s/M rows" for name, (a, b) in fits.items()), flush=True)


def compare(rows: int, workdir: Path, repeat: int = 1, skip_seed: bool = False) -> Repeated:
    """Seed vs ours on a generated yellow month of `rows` rows (ours `repeat` times)."""
    source = source_file(workdir, "yellow", YELLOW_MONTH, rows)
    mirror = source.parents[1]
    print(f"\n== yellow {YELLOW_MONTH}, {rows:,} rows, {source.stat().st_size / 1e6:.1f} MB gzipped CSV ==", flush=True)
    with serve_folder(mirror) as base_url:
        s = None
        if not skip_seed:
            with tempfile.TemporaryDirectory(dir=workdir, prefix="seed_") as tmp:
                s = seed(f"{base_url}/yellow/{source.name}", Path(tmp))
        r = ours_repeated(base_url, workdir, "yellow", YELLOW_MONTH, rows, repeat)
    if s is not None:
        o = r.median
        print(f"{'':34}{'seed (pandas)':>16}{'ours':>12}{'ratio':>10}")
        print(f"{'data work (sum of steps), s':34}{s.work:16.2f}{r.work:12.2f}{s.work / r.work:9.1f}x")
        print(f"{'whole process wall time, s':34}{s.wall:16.2f}{o.wall:12.2f}{o.wall / s.wall:9.2f} of seed")
        rss_ratio = o.peak_rss_mb / s.peak_rss_mb
        print(f"{'peak RSS, MB':34}{s.peak_rss_mb:16.0f}{o.peak_rss_mb:12.0f}{rss_ratio:9.2f} of seed")
        size_ratio = o.parquet_bytes / s.parquet_bytes
        s_mb, o_mb = s.parquet_bytes / 1e6, o.parquet_bytes / 1e6
        print(f"{'Parquet file, MB':34}{s_mb:16.1f}{o_mb:12.1f}{size_ratio:9.2f} of seed")
        print("  seed steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.steps.items()))
        print("  our steps:  " + ", ".join(f"{k} {v:.2f} s" for k, v in o.steps.items()))
        print(f"  our process outside the steps (imports, instance, run bookkeeping): {o.wall - r.work:.2f} s")
        if repeat > 1:
            print(f"  (ours: medians of {repeat} runs; the seed ran once)")
    else:
        print("seed: skipped (--skip-seed)")
    print(r.line(), flush=True)
    return r


def fhv(rows: int, workdir: Path, repeat: int = 1) -> None:
    """Ours on a generated fhv month of `rows` rows (the seed pipeline knows no fhv)."""
    source = source_file(workdir, "fhv", FHV_MONTH, rows)
    print(f"\n== fhv {FHV_MONTH}, {rows:,} rows, {source.stat().st_size / 1e6:.1f} MB gzipped CSV ==", flush=True)
    with serve_folder(source.parents[1]) as base_url:
        r = ours_repeated(base_url, workdir, "fhv", FHV_MONTH, rows, repeat)
    print("seed: skipped (the seed pipeline knows only yellow and green)")
    print(r.line(), flush=True)


def backfill(partitions: int, workdir: Path) -> None:
    """Per-run overhead: many small partitions, one run each, in one process on a persistent instance."""
    import dagster as dg
    from backfill import build_mirror

    mirror, keys = build_mirror(workdir)
    keys = keys[:partitions]
    with serve_folder(mirror) as base_url, tempfile.TemporaryDirectory(dir=workdir) as tmp:
        os.environ.update({"TAXI_TARGET": "local", "TAXI_DATA_DIR": f"{tmp}/data", "TAXI_SOURCE_URL": base_url})
        from taxi_assets.definitions import build_defs
        from taxi_assets.sources import RELEASES

        job = build_defs("local", RELEASES).resolve_job_def("trips_job")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        run_walls, step_sums = [], []
        Path(f"{tmp}/home").mkdir()
        with dg.DagsterInstance.local_temp(tempdir=f"{tmp}/home") as instance:
            for key in keys:
                started = time.perf_counter()
                result = job.execute_in_process(partition_key=key, instance=instance, run_config=quiet)
                run_walls.append(time.perf_counter() - started)
                stats = instance.get_run_step_stats(result.run_id)
                step_sums.append(sum(s.end_time - s.start_time for s in stats))
    overhead = [w - s for w, s in zip(run_walls, step_sums, strict=True)]
    colors = sorted({k.split("|")[0] for k in keys})
    print(f"\n== backfill: {len(keys)} partitions ({', '.join(colors)}), one run each, in process, sqlite instance ==")
    print(
        f"total {sum(run_walls):.1f} s; per run: wall {sum(run_walls) / len(keys):.3f} s, "
        f"steps {sum(step_sums) / len(keys):.3f} s, Dagster overhead {sum(overhead) / len(keys):.3f} s "
        f"(median {sorted(overhead)[len(overhead) // 2]:.3f} s)"
    )


@contextlib.contextmanager
def production_instance(workdir: Path) -> Iterator[Callable[[Path], dict[str, str]]]:
    """The production instance's storage (deploy/dagster.yaml: PostgreSQL, connections reused) on a
    throwaway server: each run gets a DAGSTER_HOME with that config and a database of its own."""
    import psycopg2

    # Appended: a PYTHONPATH naming an older checkout still decides which taxi_assets is measured.
    sys.path += [str(ROOT), str(ROOT / "deploy")]
    from serve import sqlalchemy_url

    from taxi_assets_harness.postgres import postgres_cluster

    with postgres_cluster(workdir / "pg") as pg_url:
        made = 0

        def fresh(home: Path) -> dict[str, str]:
            nonlocal made
            made += 1
            with contextlib.closing(psycopg2.connect(pg_url)) as conn:
                conn.autocommit = True
                conn.cursor().execute(f"CREATE DATABASE run_{made}")
            (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
            database_url = pg_url.rsplit("/", 1)[0] + f"/run_{made}"
            return {
                "DAGSTER_PG_SQLALCHEMY_URL": sqlalchemy_url(database_url),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "deploy"), os.environ.get("PYTHONPATH")])),
            }

        yield fresh


def main() -> None:
    """`make bench`: parse the sizes to measure, then measure them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_369_765, 7_667_792], help="yellow 2021-01 sizes")
    parser.add_argument(
        "--fhv-rows", type=int, nargs="*", default=[], metavar="N", help="fhv 2019-01 sizes (real: 23143222); ours only"
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run ours N times per size; print medians")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed pipeline")
    parser.add_argument("--backfill", type=int, default=0, metavar="N", help="also run N small partitions")
    parser.add_argument(
        "--instance",
        choices=["sqlite", "production"],
        default="sqlite",
        help="ours on Dagster's default SQLite instance (as `dagster asset materialize` finds it), or on "
        "the production instance's storage (deploy/dagster.yaml, a throwaway PostgreSQL)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"measuring the taxi_assets package in {PACKAGE_ROOT}, on the {args.instance} instance", flush=True)
    with contextlib.ExitStack() as stack:
        if args.instance == "production":
            global INSTANCE_ENV
            INSTANCE_ENV = stack.enter_context(production_instance(args.workdir))
        measure(args)


def measure(args: argparse.Namespace) -> None:
    """Every measurement the arguments ask for, printed as it finishes."""
    yellow = {rows: compare(rows, args.workdir, args.repeat, args.skip_seed) for rows in args.rows}
    if len(yellow) >= 2:
        fixed_cost(yellow)
    for rows in args.fhv_rows:
        fhv(rows, args.workdir, args.repeat)
    if args.backfill:
        backfill(args.backfill, args.workdir)


if __name__ == "__main__":
    main()
