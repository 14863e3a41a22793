"""The README's first command: the whole graph for a few partitions, offline, on the local target.

Serves the sample release files shipped with the package from 127.0.0.1, materializes each demo
partition through `trips_job`, then prints where the lake files and the warehouse are and how
many rows each partition has at each stage, as the runs recorded them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg

from taxi_assets import settings
from taxi_assets.assets.analytics import ZONES_KEY
from taxi_assets.dagster_internals import remote_job_origin
from taxi_assets.definitions import build_defs
from taxi_assets.dev import ensure_dagster_home
from taxi_assets.mirror import SAMPLE_MIRROR, SAMPLE_NOTE, SAMPLE_URL_ENV, serve_folder
from taxi_assets.partitions import TripMonth
from taxi_assets.schema import STATS_TABLE
from taxi_assets.sources import RELEASES

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The code location and repository `make dev` and `make serve` serve these definitions as
# (pyproject.toml's [tool.dg] code_location_name, workspace.yaml, deploy/serve.py LOCATION).
LOCATION, REPOSITORY = "taxi_assets", "__repository__"
DEMO_PARTITIONS = ("yellow|2021-01-01", "yellow|2020-07-01", "green|2020-10-01", "fhv|2019-01-01")


def _latest(instance: dg.DagsterInstance, asset: str, key: str | None) -> dg.AssetMaterialization | None:
    partitions = [key] if key is not None else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=partitions), limit=1
    ).records
    return records[0].asset_materialization if records else None


def record_runs_as_from_the_location(instance: dg.DagsterInstance) -> None:
    """Runs this process creates on `instance` name the code location they belong to, as runs
    launched from the UI or by the daemon do. `execute_in_process` names none, and the UI's overview
    timeline leaves out every run without one (ui-core's useRunsForTimeline.tsx: `if
    (!run.repositoryOrigin) return`): after the demo it was empty. Dagster has no public way to
    name it, so this passes the origin to the instance's `create_run_for_job` (RUN_ORIGIN in
    taxi_assets/dagster_internals.py; without it the runs are kept, as before, without one)."""
    create_run_for_job = instance.create_run_for_job
    module = "taxi_assets.definitions"

    def with_origin(*args, **kwargs):
        job = kwargs["job_def"].name if "job_def" in kwargs else args[0].name
        origin = remote_job_origin(module, LOCATION, REPOSITORY, job, sys.executable)  # RUN_ORIGIN
        if origin is not None:
            kwargs.setdefault("remote_job_origin", origin)
        return create_run_for_job(*args, **kwargs)

    instance.create_run_for_job = with_origin


def _print_stats() -> None:
    """The monthly statistics table, as the warehouse holds it."""
    import duckdb

    with duckdb.connect(str(settings.duckdb_path()), read_only=True) as conn:
        rows = conn.execute(
            f"SELECT color, strftime(month, '%Y-%m'), pickup_borough, trips, passengers, round(total_fare, 2), "
            f"round(median_fare, 2), round(mean_distance, 2), round(card_tip_share, 3), pickups_outside_month "
            f"FROM {STATS_TABLE} ORDER BY 1, 2, 3"
        ).fetchall()
    header = (
        "color",
        "month",
        "pickup borough",
        "trips",
        "passengers",
        "total fare",
        "median",
        "mean mi",
        "tip %",
        "outside",
    )
    widths = (7, 8, 14, 6, 10, 11, 7, 8, 6, 7)
    print("\nmonthly trip statistics (table monthly_trip_stats):")
    print(
        "  "
        + " ".join(f"{h:>{w}}" if i > 2 else f"{h:<{w}}" for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    )
    for row in rows:
        cells = [
            "-" if v is None else f"{v:.1%}" if i == 8 else f"{v:,.2f}" if i in (5, 6, 7) else str(v)
            for i, v in enumerate(row)
        ]
        print(
            "  "
            + " ".join(
                f"{c:>{w}}" if i > 2 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )


def main(argv: list[str] | None = None) -> int:
    """`make demo`: serve the bundled sample, run the graph for the demo partitions, print where everything is."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "partitions", nargs="*", default=list(DEMO_PARTITIONS), help="partition keys, e.g. 'yellow|2021-01-01'"
    )
    args = parser.parse_args(argv)
    data_dir = settings.data_dir()
    # Keep run history where `make dev` (dagster dev) will find it.
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster_home")))
    ensure_dagster_home(home)
    defs = build_defs("local", RELEASES)  # the sample mirror holds release files
    job = defs.resolve_job_def("trips_job")
    warehouse = defs.resources["warehouse"]

    with serve_folder(SAMPLE_MIRROR) as base_url, dg.DagsterInstance.get() as instance:
        record_runs_as_from_the_location(instance)  # so the UI's timeline shows them
        # Resolved by the upstream_files resource when each run starts; runs record the public file's URL
        # and "bundled sample", not this port (mirror.recorded_source).
        os.environ["TAXI_SOURCE_URL"] = os.environ[SAMPLE_URL_ENV] = base_url
        # `make dev` on this data folder serves the sample again (taxi_assets/dev.py).
        (data_dir / SAMPLE_NOTE).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / SAMPLE_NOTE).write_text(
            "make demo loaded this folder from the bundled sample mirror (taxi_assets/sample_mirror);\n"
            "make dev serves it again unless TAXI_SOURCE_URL is set. Delete this file to download from upstream.\n"
        )
        print(f"sample mirror: {base_url} (from {SAMPLE_MIRROR})")
        print(f"data dir:      {data_dir}\n")
        started = time.perf_counter()
        failed = []
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

        # What the data is for: the zone lookup, each partition's statistics, the chart.
        everything = defs.resolve_implicit_global_asset_job_def()
        t0 = time.perf_counter()
        analytics = [everything.execute_in_process(instance=instance, asset_selection=[ZONES_KEY], run_config=QUIET)]
        for key in args.partitions:
            if key not in failed:
                analytics.append(
                    everything.execute_in_process(
                        instance=instance,
                        asset_selection=[dg.AssetKey(STATS_TABLE)],
                        partition_key=key,
                        run_config=QUIET,
                        raise_on_error=False,
                    )
                )
        chart = dg.AssetKey("trips_per_month_chart")
        analytics.append(everything.execute_in_process(instance=instance, asset_selection=[chart], run_config=QUIET))
        analytics_seconds = time.perf_counter() - t0
        if not all(result.success for result in analytics):
            failed.append("analytics")

        counts = warehouse.slice_row_counts()
        print(f"\n{'partition':<20} {'lake rows':>10} {'warehouse rows':>15}  lake file")
        for key in args.partitions:
            month = TripMonth.from_key(key, RELEASES.colors)
            published = _latest(instance, "gcs_parquet", key)
            lake_rows = published.metadata["dagster/row_count"].value if published else "-"
            uri = published.metadata["uri"].value if published else "-"
            print(f"{key:<20} {lake_rows:>10} {counts.get((month.color, month.month), '-'):>15}  {uri}")
        chart_uri = _latest(instance, "trips_per_month_chart", None)
    _print_stats()
    total = sum(counts.values())
    print(f"\nwarehouse: {settings.duckdb_path()} (DuckDB, table rides: {total} rows in {len(counts)} slices)")
    print(f"zones, monthly statistics and the chart: {analytics_seconds:.1f} s")
    if chart_uri is not None:
        print(f"chart: {chart_uri.metadata['uri'].value}")
    print(f"{len(args.partitions)} partitions in {elapsed:.1f} s; run history in DAGSTER_HOME={home}")
    print("browse it: make dev  (dg dev on http://127.0.0.1:3000, serving the sample mirror again)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
