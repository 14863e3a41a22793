"""What a sensor tick and a schedule tick of the `tlc` source cost when `raw_trips` has a long
materialization history (each reload and revision of a month adds one record, forever).

On a throwaway PostgreSQL cluster (the production instance's storage), `--records` raw_trips
materializations (default 10,000) are recorded across the tlc grid's months with a file, then:
- a sensor tick where 4 of the files changed since the cursor (so the run history is read);
- a schedule tick on the 25th (it always reads the run history).
Each is timed `--repeat` times (default 5); the medians are printed. The mirror is a loopback
folder holding the 4 changed files (every other HEAD answers 403 at once, as the TLC does for a
month not out), so the HEADs cost little and the history read shows.

    .venv/bin/python benchmarks/tick_history.py
    .venv/bin/python benchmarks/tick_history.py --before /path/to/older/checkout   # both, one history

The older checkout is measured in a process of its own (its folder first on PYTHONPATH), on the
same history: this script only calls the sensor and the schedule, whose signatures are the same but
for the name of the resource they take (`tick_resources`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Appended: a PYTHONPATH naming an older checkout still decides which taxi_assets is measured.
sys.path += [str(ROOT), str(ROOT / "deploy")]

import dagster as dg  # noqa: E402
from serve import sqlalchemy_url  # noqa: E402

import taxi_assets  # noqa: E402
from taxi_assets.mirror import serve_folder  # noqa: E402
from taxi_assets.schedules import newest_month_schedule  # noqa: E402
from taxi_assets.sensors import upstream_files_sensor  # noqa: E402
from taxi_assets.sources import TLC, month_after  # noqa: E402
from taxi_assets_harness.postgres import postgres_cluster  # noqa: E402

LAST = dt.date(2026, 10, 1)  # the newest month the tlc grid offers in December 2026
CHANGED = ["yellow|2024-01-01", "green|2024-01-01", "fhv|2024-01-01", "fhvhv|2024-01-01"]
TICK = dt.datetime(2026, 12, 25, 6, 0, tzinfo=dt.timezone.utc)  # asks for 2026-10


def cells() -> list[str]:
    """The tlc grid's cells with a file, up to LAST: where the seeded history goes."""
    keys = []
    for color in TLC.colors:
        month = TLC.first_month[color]
        while month <= LAST:
            keys.append(f"{color}|{month.isoformat()}")
            month = month_after(month)
    return keys


def seed(instance: dg.DagsterInstance, records: int) -> float:
    """Record `records` raw_trips materializations across the cells; the seconds it took."""
    keys = cells()

    def record(i: int) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key="raw_trips",
                partition=keys[i % len(keys)],
                metadata={"source_fingerprint": f"|{1_700_000_000 + i}|{1000 + i}"},
            )
        )

    started = time.monotonic()
    # One record takes ~60 ms here, mostly waiting on the database: 8 at a time.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(record, range(records)))
    return time.monotonic() - started


def tick_resources(url: str) -> dict[str, object]:
    """The resources the sensor and the schedule take, reading the tlc files from `url`, under the
    names of the checkout measured (before the resource was `upstream_files`, it was `source`)."""
    try:
        from taxi_assets.resources.upstream_files import UpstreamFiles
    except ImportError:  # an older checkout
        from taxi_assets.resources.source import TripSource

        return {"source": TripSource(source="tlc", base_url=url)}
    return {"upstream_files": UpstreamFiles.of(TLC, base_url=url)}


def measure(pg_url: str, url: str, repeat: int) -> None:
    """Time the two ticks against a seeded instance and a mirror: run once per checkout."""
    print(f"taxi_assets from {Path(taxi_assets.__file__).parent}")
    overrides = {"storage": {"postgres": {"postgres_url": pg_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        resources = tick_resources(url)
        first = upstream_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        # The cursor of a sensor that saw other versions of the 4 files: this tick reads their history.
        stale = json.dumps(dict.fromkeys(json.loads(first.cursor), "older"))

        def sensor_tick() -> float:
            context = dg.build_sensor_context(instance=instance, cursor=stale, resources=resources)
            started = time.monotonic()
            result = upstream_files_sensor(context)
            assert len(result.run_requests) == len(CHANGED), result
            return time.monotonic() - started

        def schedule_tick() -> float:
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=TICK, resources=resources
            ) as context:
                started = time.monotonic()
                newest_month_schedule(context)
                return time.monotonic() - started

        for name, tick in (("sensor tick, 4 files changed", sensor_tick), ("schedule tick", schedule_tick)):
            times = [tick() for _ in range(repeat)]
            print(f"  {name}: median {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})")


def main() -> None:
    """Seed one history, then time the ticks of this checkout (and of `--before`, if given) on it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older checkout to measure too, on the same history")
    parser.add_argument("--measure", nargs=2, metavar=("PG_URL", "MIRROR_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp, postgres_cluster(Path(tmp) / "pg") as pg_url:
        mirror = Path(tmp) / "mirror" / "trip-data"
        mirror.mkdir(parents=True)
        for key in CHANGED:
            color, month = key.split("|")
            (mirror / TLC.file_name(color, month[:7])).write_bytes(b"PAR1" + bytes(1000) + b"PAR1")
        database = sqlalchemy_url(pg_url)
        with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": database}}}) as instance:
            print(f"seeding {args.records} raw_trips materializations over {len(cells())} partitions ...")
            print(f"  seeded in {seed(instance, args.records):.0f} s")
        with serve_folder(mirror.parent) as url:
            for checkout in [args.before, ROOT] if args.before else [ROOT]:
                env = {**os.environ, "PYTHONPATH": str(checkout)}
                command = [sys.executable, __file__, "--measure", database, url, "--repeat", str(args.repeat)]
                subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
