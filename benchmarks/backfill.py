"""A full-history backfill, as a user launches it from the UI: all 93 partitions (2019-01 ..
2021-07, three colors; small generated files from a loopback mirror) in one partition backfill,
run by the daemon, on up to three instances:

- production: `make serve` (code server, webserver, daemon) on a throwaway PostgreSQL cluster,
  a process per run (the default run launcher);
- celery: the same with DAGSTER_CELERY_BROKER_URL (a throwaway Redis) and two `make worker`
  processes on this machine (DAGSTER_CELERY_CONCURRENCY each, default 2): runs are Celery tasks;
- dev: `dagster dev` on its SQLite instance.

Prints, per instance and then side by side: wall time, runs per minute, run start (RUN_STARTING
to RUN_START: handing the run over until its process runs the job), data steps, CPU per partition,
the time from the launch to the first run's start, the median wait from a run's creation to its
start, the peak number of runs side by side; and the per-run overhead (a run's time minus its data
steps; the whole cost per partition, wall x concurrent runs / partitions, minus the steps).

    .venv/bin/python benchmarks/backfill.py                                   # production and celery
    .venv/bin/python benchmarks/backfill.py --instance dev --partitions 12    # one, fewer partitions
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from generate import generate  # noqa: E402

from taxi_assets.mirror import serve_folder  # noqa: E402
from taxi_assets.partitions import trip_partitions  # noqa: E402
from taxi_assets.sources import RELEASES  # noqa: E402
from taxi_assets_harness.graphql import graphql, max_overlap, wait_until  # noqa: E402
from taxi_assets_harness.instances import (  # noqa: E402
    backfill_runs,
    dagster_dev,
    launch_backfill,
    make_serve,
    make_worker,
)
from taxi_assets_harness.postgres import postgres_cluster  # noqa: E402
from taxi_assets_harness.redis import redis_server  # noqa: E402

CONCURRENT_RUNS = {"production": 4, "celery": 4, "dev": 3}  # deploy/dagster.yaml, taxi_assets/dagster.yaml


def build_mirror(workdir: Path) -> tuple[Path, list[str]]:
    """Small files for every partition of the grid: generated yellow months, real green and fhv rows."""
    keys = trip_partitions(RELEASES).get_partition_keys()
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
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample_for[color].read_bytes())
    return mirror, keys


def _seconds(stats: list[dict]) -> float:
    return sum(s["endTime"] - s["startTime"] for s in stats if s["startTime"] and s["endTime"])


PHASES = {
    "RunEnqueuedEvent": "enqueued",  # the run is created (the backfill daemon submits it to the queue)
    "RunStartingEvent": "starting",
    "RunStartEvent": "start",
    "RunSuccessEvent": "end",
    "RunFailureEvent": "end",
}


def _phases(port: int, run_id: str) -> dict[str, float]:
    """When a run was queued, handed to the launcher, started in its process, and ended."""
    events = graphql(
        port,
        f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ eventConnection {{ events {{ __typename '
        f"... on MessageEvent {{ timestamp }} }} }} }} }} }}",
    )["runOrError"]["eventConnection"]["events"]
    return {PHASES[e["__typename"]]: float(e["timestamp"]) / 1000 for e in events if e["__typename"] in PHASES}


ROLES = {  # the first key found in a process's command line names its role
    "taxi_celery:app worker": "Celery workers",  # the runs themselves, on Celery (before "postgres": see below)
    "dagster-daemon": "daemon",
    "dagster-webserver": "webserver",
    "dagster dev": "webserver",
    "api grpc": "code server",
    "code-server": "code server",
    # The server and its backends ("postgres: user db host..."); a worker's command line can name
    # PostgreSQL too (its arguments), hence the workers first.
    "postgres": "PostgreSQL",
    "redis-server": "Redis",
}


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by the machine (busy, all cores) and by each long-lived process role."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    used = {"machine": (sum(fields) - fields[3] - fields[4]) / tick}  # all but idle and iowait
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parts = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = next((r for key, r in ROLES.items() if key in cmdline), None)
        if role:
            used[role] = used.get(role, 0.0) + (int(parts[11]) + int(parts[12])) / tick
    return used


def measure(port: int, keys: list[str], instance: str) -> dict[str, float]:
    """Backfill `keys` on the instance at `port`, wait for every run, print its pace and return its figures by name."""
    cpu_before = _cpu_by_role()
    started = time.time()
    backfill = launch_backfill(port, keys)

    def finished():
        runs = backfill_runs(port, backfill)
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return runs if len(runs) == len(keys) and len(done) == len(runs) else None

    runs = wait_until(finished, 3600, "the backfill", interval=2)
    wall = max(r["endTime"] for r in runs) - started
    failed = [r["runId"] for r in runs if r["status"] != "SUCCESS"]
    run_seconds = [r["endTime"] - r["startTime"] for r in runs]
    steps = [_seconds(r["stepStats"]) for r in runs]
    in_run = [w - s for w, s in zip(run_seconds, steps, strict=True)]
    slots = CONCURRENT_RUNS[instance]
    per_partition = wall * slots / len(keys)
    print(f"\n== {instance}: backfill of {len(keys)} partitions, at most {slots} runs at once ==")
    print(f"wall {wall:.0f} s, {len(keys) / wall * 60:.1f} runs per minute, {len(failed)} failed")
    print(
        f"per run (median): {statistics.median(run_seconds):.2f} s from start to end, data steps "
        f"{statistics.median(steps):.2f} s, overhead in the run {statistics.median(in_run):.2f} s"
    )
    print(
        f"per partition, all costs: {per_partition:.2f} s of a run slot (wall x {slots} / {len(keys)}), "
        f"of which {statistics.mean(steps):.2f} s data steps: overhead {per_partition - statistics.mean(steps):.2f} s",
        flush=True,
    )
    cpu = {role: seconds - cpu_before.get(role, 0.0) for role, seconds in _cpu_by_role().items()}
    runs_cpu = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine")
    print(
        f"CPU seconds per partition: {cpu['machine'] / len(keys):.2f} on the machine, of which run processes "
        f"{runs_cpu / len(keys):.2f}, "
        + ", ".join(f"{k} {v / len(keys):.2f}" for k, v in sorted(cpu.items()) if k != "machine"),
        flush=True,
    )
    phases = [_phases(port, r["runId"]) for r in runs]
    queued = [p["starting"] - p["enqueued"] for p in phases if {"starting", "enqueued"} <= p.keys()]
    launch = [p["start"] - p["starting"] for p in phases if {"start", "starting"} <= p.keys()]
    print(
        f"where a run's time goes (median): {statistics.median(queued):.2f} s queued, "
        f"{statistics.median(launch):.2f} s from launch to its process running the job (a new Python "
        f"process, or a Celery worker's: imports, instance, code location), "
        f"{statistics.median(run_seconds):.2f} s running",
        flush=True,
    )
    first_start = min(p["start"] for p in phases if "start" in p) - started
    waits = [p["start"] - p["enqueued"] for p in phases if {"start", "enqueued"} <= p.keys()]
    peak = max_overlap(runs)
    print(
        f"pace: first run started {first_start:.1f} s after the launch; median {statistics.median(waits):.1f} s "
        f"from a run's creation to its start; at most {peak} runs side by side",
        flush=True,
    )
    return {
        "wall (s)": wall,
        "runs per minute": len(keys) / wall * 60,
        "failed runs": len(failed),
        "run start, median (s)": statistics.median(launch),
        "data steps, median (s)": statistics.median(steps),
        "CPU per partition (s)": cpu["machine"] / len(keys),
        "launch to first run start (s)": first_start,
        "creation to start, median (s)": statistics.median(waits),
        "peak runs side by side": peak,
    }


def side_by_side(results: dict[str, dict[str, float]], partitions: int) -> None:
    """Print each instance's figures in one table, a column per instance."""
    names = list(results)
    print(f"\n== side by side: backfill of {partitions} partitions ==")
    print(f"{'':32}" + "".join(f"{name:>14}" for name in names))
    for figure in next(iter(results.values())):
        print(f"{figure:32}" + "".join(f"{results[name][figure]:>14.2f}" for name in names))


@contextlib.contextmanager
def celery_instance(tmp: Path, pg_url: str, env: dict[str, str], concurrency: int):
    """`make serve` with a Redis broker and two `make worker`s on this machine."""
    with redis_server(tmp / "redis") as broker:
        served = {**env, "DAGSTER_CELERY_BROKER_URL": broker.url}
        worker_env = {**env, "DAGSTER_CELERY_CONCURRENCY": str(concurrency)}
        with (
            make_serve(tmp, pg_url, served) as port,
            make_worker(tmp / "w1", pg_url, broker.url, worker_env),
            make_worker(tmp / "w2", pg_url, broker.url, worker_env),
        ):
            yield port


def main() -> None:
    """Start each chosen instance in turn, backfill on it, and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--instance",
        choices=["production", "celery", "dev", "both", "all"],
        default="both",
        help="both: production and celery; all: the three",
    )
    parser.add_argument("--partitions", type=int, default=93, help="the first N partitions of the grid")
    parser.add_argument("--celery-concurrency", type=int, default=2, help="runs at once per Celery worker (two)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    chosen = {"both": ["production", "celery"], "all": ["production", "celery", "dev"]}.get(
        args.instance, [args.instance]
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    mirror, keys = build_mirror(args.workdir)
    keys = keys[: args.partitions]
    results: dict[str, dict[str, float]] = {}
    with serve_folder(mirror) as base_url:
        env = {"TAXI_SOURCE_URL": base_url}
        for instance in chosen:
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                if instance == "dev":
                    with dagster_dev(Path(tmp), env) as port:
                        results[instance] = measure(port, keys, instance)
                    continue
                with postgres_cluster(Path(tmp) / "pg") as pg_url:
                    if instance == "production":
                        with make_serve(Path(tmp), pg_url, env) as port:
                            results[instance] = measure(port, keys, instance)
                    else:
                        with celery_instance(Path(tmp), pg_url, env, args.celery_concurrency) as port:
                            results[instance] = measure(port, keys, instance)
    side_by_side(results, len(keys))


if __name__ == "__main__":
    main()
