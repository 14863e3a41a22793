"""The whole code location loads, and its jobs, sensors, checks and partitions resolve."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from taxi_assets.partitions import COLORS, TripMonth, trip_partitions
from taxi_assets_tests.conftest import fhv_month, real_rows

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_every_asset_described(local_env):
    from taxi_assets.definitions import build_defs

    defs = build_defs("local")
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert set(specs) == {"raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table"}
    for name, spec in specs.items():
        assert spec.description and len(spec.description) > 80, name
        assert spec.partitions_def == trip_partitions
        assert spec.kinds, name
    assert specs["bq_rides_table"].deps[0].asset_key == dg.AssetKey("gcs_parquet")
    assert defs.resolve_job_def("trips_job") is not None
    assert defs.resolve_sensor_def("upstream_files_sensor") is not None
    check_keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "has_rows",
        "matches_pinned_schema",
        "pickups_within_month",
        "dropoff_not_before_pickup",
        "slice_matches_lake_file",
    } <= check_keys
    defs.resolve_implicit_global_asset_job_def()


def test_partition_grid_is_month_by_color_with_color_first_keys():
    keys = trip_partitions.get_partition_keys(current_time=dt.datetime(2021, 8, 1))
    assert len(keys) == 31 * 3  # 2019-01 .. 2021-07 for each color
    assert "yellow|2021-01-01" in keys
    assert TripMonth.from_key("fhv|2019-02-01").file_stem == "fhv_tripdata_2019-02"
    assert set(COLORS) == {"yellow", "green", "fhv"}


def test_unknown_target_is_refused():
    import pytest

    from taxi_assets.resources.targets import resources_for

    with pytest.raises(ValueError, match="TAXI_TARGET must be one of"):
        resources_for("aws")


def test_sensor_requests_new_and_changed_files_once(mirror, local_env, instance):
    from taxi_assets.definitions import build_defs

    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("fhv", "2019-01", fhv_month("2019-01"))
    defs = build_defs("local")
    sensor = defs.resolve_sensor_def("upstream_files_sensor")

    def tick(cursor):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources={"source": defs.resources["source"]}
        )
        result = sensor.evaluate_tick(context)
        return result, result.cursor

    cursor = None
    requested = []
    # Walk the whole grid, a slice per tick, as the daemon would.
    for _ in range(len(trip_partitions.get_partition_keys()) // 30 + 1):
        result, cursor = tick(cursor)
        requested += [r.partition_key for r in result.run_requests]
    assert sorted(requested) == ["fhv|2019-01-01", "yellow|2021-01-01"]
    assert set(json.loads(cursor)["fingerprints"]) == {"fhv|2019-01-01", "yellow|2021-01-01"}

    # A file that changes upstream is requested again, with a new run key.
    mirror.publish("fhv", "2019-01", fhv_month("2019-01")[:10])
    os.utime(mirror.path("fhv", "2019-01"), (1, 1))
    again = []
    for _ in range(len(trip_partitions.get_partition_keys()) // 30 + 1):
        result, cursor = tick(cursor)
        again += [(r.partition_key, r.run_key) for r in result.run_requests]
    assert [k for k, _ in again] == ["fhv|2019-01-01"]
    assert again[0][1].startswith("fhv|2019-01-01@")


def test_cli_materializes_one_partition(mirror, local_env, tmp_path):
    """`dagster asset materialize` as a user runs it, in a fresh process."""
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "taxi_assets.definitions",
            "--select",
            "*",
            "--partition",
            "green|2020-10-01",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "RUN_SUCCESS" in completed.stderr
    import duckdb

    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rides WHERE color = 'green'").fetchone()[0] == 500


def test_workspace_validates_as_dagster_dev_loads_it(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path), "TAXI_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "All code locations passed validation" in completed.stdout + completed.stderr


def test_gcp_target_loads_without_its_settings_until_launch(monkeypatch):
    """EnvVar settings resolve when a run starts, so the UI can load the gcp code location anywhere."""
    for name in ("GCP_PROJECT", "GCS_BUCKET", "BQ_DATASET", "GCP_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    from taxi_assets.definitions import build_defs

    defs = build_defs("gcp")
    assert type(defs.resources["lake"]).__name__ == "GCSLake"
    assert type(defs.resources["warehouse"]).__name__ == "BigQueryWarehouse"
    assert defs.resolve_job_def("trips_job") is not None


def test_demo_runs_offline_and_reports_every_stage(tmp_path):
    """The README's first command, minus the install: the bundled sample mirror through the graph."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE_URL", "TAXI_TARGET", "DAGSTER_HOME")}
    completed = subprocess.run(
        [sys.executable, "-m", "taxi_assets.demo"],
        cwd=tmp_path,
        env={**env, "TAXI_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    expected = {"yellow|2021-01-01": 3000, "yellow|2020-07-01": 266, "green|2020-10-01": 3500, "fhv|2019-01-01": 18}
    for key, rows in expected.items():
        [row] = [line for line in lines if line.startswith(key) and line.endswith(".parquet")]
        assert row.split()[1:3] == [str(rows), str(rows)], row
    assert "table rides: 6784 rows in 4 slices" in completed.stdout
    assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
