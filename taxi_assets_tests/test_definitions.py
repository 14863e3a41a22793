"""The whole code location loads, and its jobs, sensors, checks and partitions resolve."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from taxi_assets.partitions import trip_partitions
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import real_rows

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_every_asset_described(local_env):
    from taxi_assets.definitions import build_defs

    defs = build_defs("local", RELEASES)
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert set(specs) == {
        "raw_trips",
        "clean_trips",
        "gcs_parquet",
        "bq_rides_table",
        "taxi/zones",
        "monthly_trip_stats",
        "trips_per_month_chart",
    }
    unpartitioned = {"taxi/zones", "trips_per_month_chart"}
    for name, spec in specs.items():
        assert spec.description and len(spec.description) > 80, name
        assert spec.partitions_def == (None if name in unpartitioned else trip_partitions(RELEASES)), name
        assert spec.kinds, name
    assert specs["bq_rides_table"].deps[0].asset_key == dg.AssetKey("gcs_parquet")
    assert defs.resolve_job_def("trips_job") is not None
    assert defs.resolve_sensor_def("upstream_files_sensor") is not None
    # On from the first load: a fresh deployment needs it to load the zones (see analytics.py).
    automation = defs.resolve_sensor_def("analytics_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    check_keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "has_rows",
        "matches_pinned_schema",
        "pickups_within_month",
        "dropoff_not_before_pickup",
        "slice_matches_lake_file",
        "no_rows_rejected",
        "has_265_zones_with_unique_ids",
        "trips_add_up_to_the_slice",
        "location_ids_have_zones",
    } <= check_keys
    defs.resolve_implicit_global_asset_job_def()


def test_unknown_target_is_refused():
    import pytest

    from taxi_assets.targets import resources_for

    with pytest.raises(ValueError, match="TAXI_TARGET must be one of"):
        resources_for("aws", RELEASES)


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
            "*bq_rides_table",
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

    defs = build_defs("gcp", RELEASES)
    assert defs.resources["lake_io_manager"].lake.resource_cls.__name__ == "GCSLake"
    assert defs.resources["lake"] is defs.resources["lake_io_manager"].lake  # raw_trips asks the same lake
    assert type(defs.resources["warehouse"]).__name__ == "BigQueryWarehouse"
    assert defs.resolve_job_def("trips_job") is not None


def test_the_automation_sensor_ticks_every_5_s_unless_told_otherwise():
    """analytics_automation's interval: 10 s by default (Dagster's is 30 s), TAXI_AUTOMATION_INTERVAL_SECONDS
    when set; a value that is not whole seconds stops the code location naming the setting."""
    show = (
        "from taxi_assets.definitions import defs; print(defs.resolve_sensor_def('analytics_automation')"
        ".minimum_interval_seconds)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TAXI_AUTOMATION_INTERVAL_SECONDS"}
    found = {}
    for value in (None, "30", "2.5"):
        extra = {} if value is None else {"TAXI_AUTOMATION_INTERVAL_SECONDS": value}
        found[value] = subprocess.run(
            [sys.executable, "-c", show], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )
    assert found[None].stdout.strip() == "10" and found["30"].stdout.strip() == "30"
    assert found["2.5"].returncode != 0
    assert "TAXI_AUTOMATION_INTERVAL_SECONDS must be whole seconds, 1 or more, got '2.5'" in found["2.5"].stderr
