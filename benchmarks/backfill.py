"""A full-history backfill, as a user launches it from the UI: all 93 partitions (2019-01 ..
2021-07, three colors; small generated files from a loopback mirror) in one partition backfill,
run by the daemon with the default run launcher (a process per run), on two instances:

- production: `make serve` (code server, webserver, daemon) on a throwaway PostgreSQL cluster;
- dev: `dagster dev` on its SQLite instance.

Prints wall time, runs per minute and per-run overhead: a run's time minus its data steps, and
the whole cost per partition (wall x concurrent runs / partitions) minus the steps, which also
counts starting each run's process.

    .venv/bin/python benchmarks/backfill.py                  # both instances
    .venv/bin/python benchmarks/backfill.py --instance dev   # one
"""

from __future__ import annotations

import argparse
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
from taxi_assets_harness.graphql import graphql, wait_until  # noqa: E402
from taxi_assets_harness.instances import backfill_runs, dagster_dev, launch_backfill, make_serve  # noqa: E402
from taxi_assets_harness.postgres import postgres_cluster  # noqa: E402

CONCURRENT_RUNS = {"production": 4, "dev": 3}  # deploy/dagster.yaml, taxi_assets/dagster.yaml


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
    "RunEnqueuedEvent": "enqueued",
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


ROLES = {
    "dagster-daemon": "daemon",
    "dagster-webserver": "webserver",
    "dagster dev": "webserver",
    "api grpc": "code server",
    "code-server": "code server",
    "postgres": "PostgreSQL",
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


def measure(port: int, keys: list[str], instance: str) -> None:
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
        f"process: imports, instance, code location), {statistics.median(run_seconds):.2f} s running",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance", choices=["production", "dev", "both"], default="both")
    parser.add_argument("--partitions", type=int, default=93, help="the first N partitions of the grid")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    mirror, keys = build_mirror(args.workdir)
    keys = keys[: args.partitions]
    with serve_folder(mirror) as base_url:
        env = {"TAXI_SOURCE_URL": base_url}
        if args.instance in ("production", "both"):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                with postgres_cluster(Path(tmp) / "pg") as pg_url, make_serve(Path(tmp), pg_url, env) as port:
                    measure(port, keys, "production")
        if args.instance in ("dev", "both"):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, dagster_dev(Path(tmp), env) as port:
                measure(port, keys, "dev")


if __name__ == "__main__":
    main()
