"""Our partition vs the seed pipeline, side by side, on the same generated months served from the
same loopback mirror. Prints time, peak RSS and file size for each, and the ratios.

    python benchmarks/run.py                     # both sizes: 1,369,765 and 7,667,792 rows
    python benchmarks/run.py --rows 1369765      # one size
    python benchmarks/run.py --backfill 93       # also: per-run overhead over 93 small partitions

Generated files are cached in --workdir (default ./bench, ignored by git).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate  # noqa: E402

from taxi_assets.mirror import serve_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARTITION = "yellow|2021-01-01"
STEP_DONE = re.compile(r'Finished execution of step "(\w+)" in ([\d.]+)(ms|s|m)')


@dataclass
class Measured:
    wall: float
    peak_rss_mb: float
    steps: dict[str, float] = field(default_factory=dict)
    parquet_bytes: int = 0
    output: str = ""

    @property
    def work(self) -> float:
        return sum(self.steps.values())


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run a command; its wall time, peak RSS (MB, of the process and its waited children) and output."""
    with open(log, "w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({process.returncode}); see {log}:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def seed(url: str, work: Path) -> Measured:
    out = work / "seed_out"
    wall, rss, text = run_measured(
        [sys.executable, str(ROOT / "benchmarks" / "seed_pipeline.py"), url, str(out)],
        dict(os.environ),
        work / "seed.log",
    )
    result = json.loads(text.strip().splitlines()[-1])
    return Measured(wall, rss, result["seconds"], Path(result["path"]).stat().st_size)


def ours(base_url: str, work: Path) -> Measured:
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
    cmd = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "taxi_assets.definitions",
        "--select",
        "*",
        "--partition",
        PARTITION,
    ]
    wall, rss, text = run_measured(cmd, env, work / "ours.log")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}
    steps = {name: float(value) * unit[u] for name, value, u in STEP_DONE.findall(text)}
    parquet = data / "lake" / "data" / "yellow" / "yellow_tripdata_2021-01.parquet"
    return Measured(wall, rss, steps, parquet.stat().st_size, text)


def compare(rows: int, workdir: Path) -> None:
    mirror = workdir / f"mirror_{rows}"
    source = mirror / "yellow" / "yellow_tripdata_2021-01.csv.gz"
    if not source.exists():
        print(f"generating {rows:,} rows -> {source} ...", flush=True)
        generate(source, rows)
    with serve_folder(mirror) as base_url, tempfile.TemporaryDirectory(dir=workdir) as tmp:
        url = f"{base_url}/yellow/yellow_tripdata_2021-01.csv.gz"
        s = seed(url, Path(tmp))
        o = ours(base_url, Path(tmp))
    print(f"\n== {rows:,} rows, {source.stat().st_size / 1e6:.1f} MB gzipped CSV ==")
    print(f"{'':34}{'seed (pandas)':>16}{'ours':>12}{'ratio':>10}")
    print(f"{'data work (sum of steps), s':34}{s.work:16.2f}{o.work:12.2f}{s.work / o.work:9.1f}x")
    print(f"{'whole process wall time, s':34}{s.wall:16.2f}{o.wall:12.2f}{o.wall / s.wall:9.2f} of seed")
    print(f"{'peak RSS, MB':34}{s.peak_rss_mb:16.0f}{o.peak_rss_mb:12.0f}{o.peak_rss_mb / s.peak_rss_mb:9.2f} of seed")
    size_ratio = o.parquet_bytes / s.parquet_bytes
    print(f"{'Parquet file, MB':34}{s.parquet_bytes / 1e6:16.1f}{o.parquet_bytes / 1e6:12.1f}{size_ratio:9.2f} of seed")
    print("  seed steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.steps.items()))
    print("  our steps:  " + ", ".join(f"{k} {v:.2f} s" for k, v in o.steps.items()))
    print(f"  our process outside the steps (imports, instance, run bookkeeping): {o.wall - o.work:.2f} s")


def backfill(partitions: int, workdir: Path) -> None:
    """Per-run overhead: many small partitions, one run each, in one process on a persistent instance."""
    import dagster as dg

    from taxi_assets.partitions import trip_partitions

    # The releases' range, 2019-01 .. 2021-07, for every color: 93 partitions.
    keys = [k for k in trip_partitions.get_partition_keys() if k.split("|")[1] < "2021-08"][:partitions]
    mirror = workdir / "mirror_backfill"
    sample = ROOT / "taxi_assets" / "sample_mirror"
    sample_for = {
        "green": sample / "green" / "green_tripdata_2020-10.csv.gz",
        "fhv": sample / "fhv" / "fhv_tripdata_2019-01.csv.gz",
    }
    for key in keys:
        color, month = key.split("|")
        path = mirror / color / f"{color}_tripdata_{month[:7]}.csv.gz"
        if path.exists():
            continue
        if color == "yellow":
            generate(path, 200, dt.date.fromisoformat(month))
        else:  # real rows of the color's layout, from the package's sample mirror
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample_for[color].read_bytes())
    with serve_folder(mirror) as base_url, tempfile.TemporaryDirectory(dir=workdir) as tmp:
        os.environ.update({"TAXI_TARGET": "local", "TAXI_DATA_DIR": f"{tmp}/data", "TAXI_SOURCE_URL": base_url})
        from taxi_assets.definitions import build_defs

        job = build_defs("local").resolve_job_def("trips_job")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="*", default=[1_369_765, 7_667_792])
    parser.add_argument("--backfill", type=int, default=0, metavar="N", help="also run N small partitions")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        compare(rows, args.workdir)
    if args.backfill:
        backfill(args.backfill, args.workdir)


if __name__ == "__main__":
    main()
