"""From a backfill's launch to the chart updated, and the daemon's CPU at rest.

On `make serve` (deploy/serve.py on a throwaway PostgreSQL cluster) and `make dev`
(taxi_assets/dev.py on its SQLite instance), both on the bundled sample mirror: once the instance has
settled (the automation sensor has loaded taxi/zones and nothing runs), measures

- the CPU seconds the daemon (with its children) and every process of the service spend over
  `--rest-seconds` with nothing to do (from /proc/PID/stat);
- `--repeat` times: a backfill of the trip assets over two sample partitions, launched as the UI
  does (GraphQL), and the seconds from the launch to its first run created, its runs finished,
  `monthly_trip_stats` materialized for both partitions, and `trips_per_month_chart` materialized.

Prints each figure and the medians.

    .venv/bin/python benchmarks/backfill_to_chart.py                       # serve and dev, 3 backfills each
    .venv/bin/python benchmarks/backfill_to_chart.py --instance dev --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from taxi_assets.mirror import SAMPLE_MIRROR, serve_folder  # noqa: E402
from taxi_assets_harness.graphql import graphql, runs, wait_until  # noqa: E402
from taxi_assets_harness.instances import (  # noqa: E402
    backfill_runs,
    dagster_dev,
    latest_materialization_ms,
    launch_backfill,
    make_serve,
)
from taxi_assets_harness.postgres import postgres_cluster  # noqa: E402

PARTITIONS = ["yellow|2021-01-01", "yellow|2020-07-01"]
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid`, its reaped children (cutime, cstime) and its live descendants."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return own + sum(cpu_seconds(child) for child in _children(pid))


def descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *descendants(child)]
    return found


def service_root() -> int:
    """The process that listens on the webserver's port's parent chain root: the oldest ancestor
    started by this script (serve.py or taxi_assets.dev)."""
    me = os.getpid()
    for child in descendants(me):
        command = _cmdline(child)
        if "deploy/serve.py" in command or "taxi_assets.dev" in command:
            return child
    raise AssertionError("no make serve / make dev process among this script's children")


def _is_daemon(pid: int) -> bool:
    """`dagster-daemon run` (make serve) or `python -m dagster._daemon run` (dg dev)."""
    return any(name in _cmdline(pid) for name in ("dagster-daemon run", "dagster._daemon run"))


def daemon_pid(root: int) -> int:
    for pid in descendants(root):
        if _is_daemon(pid) and not _is_daemon(_parent(pid)):
            return pid
    raise AssertionError(f"no dagster-daemon under {root}")


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def settled(port: int) -> bool:
    """taxi/zones loaded and no run queued or going."""
    if latest_materialization_ms(port, "taxi/zones") is None:
        return False
    return all(r["status"] in FINISHED for r in runs(port))


def at_rest(port: int, seconds: float) -> tuple[float, float]:
    """CPU seconds of the daemon (and children) and of the whole service over `seconds` at rest."""
    root = service_root()
    daemon = daemon_pid(root)
    before = cpu_seconds(daemon), cpu_seconds(root)
    time.sleep(seconds)
    after = cpu_seconds(daemon), cpu_seconds(root)
    if not all(r["status"] in FINISHED for r in runs(port)):
        print("  note: a run started during the rest window", flush=True)
    return after[0] - before[0], after[1] - before[1]


def one_backfill(port: int) -> dict[str, float]:
    launched = time.time()
    backfill = launch_backfill(port, PARTITIONS)
    marks: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now = time.time() - launched
        found = backfill_runs(port, backfill)
        if found and "first run created" not in marks:
            marks["first run created"] = now
        if len(found) == len(PARTITIONS) and all(r["status"] in FINISHED for r in found):
            if "runs finished" not in marks:
                if any(r["status"] != "SUCCESS" for r in found):
                    raise AssertionError(f"the backfill's runs: {[r['status'] for r in found]}")
                marks["runs finished"] = max(r["endTime"] for r in found) - launched
        stats = _stats_done(port, launched)
        if stats is not None:
            marks["stats"] = stats - launched
            # The chart drawn after both partitions' statistics (one drawn after the first only does not count).
            chart = (latest_materialization_ms(port, "trips_per_month_chart") or 0) / 1000
            if chart >= stats:
                marks["chart"] = chart - launched
                return marks
        time.sleep(0.5)
    raise AssertionError(f"the chart was not updated within 600 s: {marks}")


def _stats_done(port: int, launched: float) -> float | None:
    """When both partitions' statistics had been materialized since the launch (epoch s), or None."""
    data = graphql(
        port,
        '{ assetOrError(assetKey: {path: ["monthly_trip_stats"]}) { ... on Asset '
        "{ assetMaterializations(limit: 10) { timestamp partition } } } }",
    )["assetOrError"]["assetMaterializations"]
    latest: dict[str, float] = {}
    for materialization in data:
        when = float(materialization["timestamp"]) / 1000
        if when > launched:
            latest[materialization["partition"]] = max(latest.get(materialization["partition"], 0.0), when)
    return max(latest.values()) if set(latest) >= set(PARTITIONS) else None


TICKS = """
query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState {
  ticks(limit: 6, statuses: [SUCCESS]) { tickId runIds requestedAssetMaterializationCount
    requestedMaterializationsForAssets { assetKey { path } partitionKeys } } } } } }
"""
AUTOMATION = {
    "repositoryLocationName": "taxi_assets",
    "repositoryName": "__repository__",
    "sensorName": "analytics_automation",
}


def print_automation_ticks(port: int) -> None:
    """The automation sensor's latest ticks that requested runs, as its tick list and a tick's detail
    read them: the count the list shows, what the detail lists per asset, the runs."""
    ticks = graphql(port, TICKS, {"s": AUTOMATION})["sensorOrError"]["sensorState"]["ticks"]
    for tick in ticks:
        detail = {
            "/".join(r["assetKey"]["path"]): r["partitionKeys"] for r in tick["requestedMaterializationsForAssets"]
        }
        print(
            f"  automation tick {tick['tickId']}: list says {tick['requestedAssetMaterializationCount']} "
            f"materializations requested; detail: {detail}; {len(tick['runIds'])} runs"
        )


@contextlib.contextmanager
def instance(kind: str, workdir: Path, source_url: str):
    env = {"TAXI_SOURCE_URL": source_url}
    if kind == "serve":
        with postgres_cluster(workdir / "pg") as pg_url, make_serve(workdir, pg_url, env) as port:
            yield port
    else:
        with dagster_dev(workdir, env) as port:
            yield port


def measure(kind: str, repeat: int, rest_seconds: float) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix=f"chart-{kind}-") as tmp,
        serve_folder(SAMPLE_MIRROR) as url,
        instance(kind, Path(tmp), url) as port,
    ):
        wait_until(lambda: settled(port), 300, "taxi/zones loaded and no run going", interval=2)
        time.sleep(10)  # the zones run's end and the ticks after it
        daemon, service = at_rest(port, rest_seconds)
        print(
            f"{kind}: at rest over {rest_seconds:.0f} s: daemon {daemon:.2f} CPU s, all processes {service:.2f} CPU s"
        )
        figures["daemon CPU s at rest"] = [daemon]
        figures["service CPU s at rest"] = [service]
        for attempt in range(repeat):
            marks = one_backfill(port)
            print(
                f"{kind}: backfill {attempt + 1}: " + ", ".join(f"{k} +{v:.1f} s" for k, v in marks.items()), flush=True
            )
            for key, value in marks.items():
                figures.setdefault(key, []).append(value)
            wait_until(lambda: settled(port), 300, "no run going", interval=1)
            time.sleep(5)
        print_automation_ticks(port)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance", choices=["serve", "dev", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rest-seconds", type=float, default=60)
    args = parser.parse_args()
    kinds = ["serve", "dev"] if args.instance == "both" else [args.instance]
    results = {kind: measure(kind, args.repeat, args.rest_seconds) for kind in kinds}
    print(f"\nmedians (load average {os.getloadavg()[0]:.2f}):")
    for kind, figures in results.items():
        print(f"  {kind}: " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
