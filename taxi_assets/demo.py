"""The README's first command: the whole graph for a few partitions, offline, on the local target.

Serves the sample release files shipped with the package from 127.0.0.1, materializes each demo
partition through `trips_job`, then prints where the lake files and the warehouse are and how
many rows each partition has at each stage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DEMO_PARTITIONS = ("yellow|2021-01-01", "yellow|2020-07-01", "green|2020-10-01", "fhv|2019-01-01")


def ensure_dagster_home(home: Path) -> None:
    """Create DAGSTER_HOME with the project's instance settings unless it has its own."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(Path(__file__).parent / "dagster.yaml", config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "partitions", nargs="*", default=list(DEMO_PARTITIONS), help="partition keys, e.g. 'yellow|2021-01-01'"
    )
    args = parser.parse_args(argv)

    os.environ["TAXI_TARGET"] = "local"
    data_dir = Path(os.environ.setdefault("TAXI_DATA_DIR", "data")).resolve()
    # Keep run history where `make dev` (dagster dev) will find it.
    ensure_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster_home"))))

    from taxi_assets.mirror import SAMPLE_MIRROR, serve_folder

    with serve_folder(SAMPLE_MIRROR) as base_url:
        os.environ["TAXI_SOURCE_URL"] = base_url
        import dagster as dg

        from taxi_assets.definitions import defs
        from taxi_assets.layout import published_key
        from taxi_assets.partitions import TripMonth

        job = defs.resolve_job_def("trips_job")
        warehouse_path = data_dir / "warehouse.duckdb"
        print(f"sample mirror: {base_url} (from {SAMPLE_MIRROR})")
        print(f"data dir:      {data_dir}\n")
        started = time.perf_counter()
        failed = []
        with dg.DagsterInstance.get() as instance:
            for key in args.partitions:
                t0 = time.perf_counter()
                result = job.execute_in_process(
                    partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
                )
                status = "ok" if result.success else "FAILED"
                print(f"  {key:<20} {status:<6} {time.perf_counter() - t0:5.2f} s  (run {result.run_id[:8]})")
                if not result.success:
                    failed.append(key)
                    for event in result.all_events:
                        if event.is_step_failure:
                            print(f"      {event.step_key}: {event.event_specific_data.error.message.strip()}")
        elapsed = time.perf_counter() - started

        lake, warehouse = defs.resources["lake"], defs.resources["warehouse"]
        counts = warehouse.slice_row_counts()
        print(f"\n{'partition':<20} {'lake rows':>10} {'warehouse rows':>15}  lake file")
        for key in args.partitions:
            month = TripMonth.from_key(key)
            published = lake.stat(published_key(month))
            lake_rows = lake.parquet_metadata(published.key).num_rows if published else "-"
            warehouse_rows = counts.get((month.color, month.month), "-")
            print(f"{key:<20} {lake_rows:>10} {warehouse_rows:>15}  {lake.uri(published_key(month))}")
        total = sum(counts.values())
        print(f"\nwarehouse: {warehouse_path} (DuckDB, table rides: {total} rows in {len(counts)} slices)")
        home = os.environ["DAGSTER_HOME"]
        print(f"{len(args.partitions)} partitions in {elapsed:.1f} s; run history in DAGSTER_HOME={home}")
        print("browse it: make dev  (dagster dev, http://127.0.0.1:3000)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
