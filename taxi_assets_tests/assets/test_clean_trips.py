"""clean_trips alone, reading raw_trips from the lake: typed Parquet in staging, and its checks."""

import dagster as dg
import pyarrow.parquet as pq

from taxi_assets.assets import build_assets
from taxi_assets.schema import RELEASES_SCHEMAS
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows, step_failure_messages

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
clean_trips, raw_trips = ASSETS.clean_trips, ASSETS.raw_trips

KEY = "green|2020-10-01"


def _clean(resources, instance):
    return dg.materialize(
        [raw_trips, clean_trips],
        selection=[clean_trips],
        partition_key=KEY,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def test_clean_trips_stores_typed_parquet_in_staging_with_its_checks(mirror, tmp_path, instance):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    resources = local_resources(tmp_path, mirror)
    dg.materialize([raw_trips], partition_key=KEY, resources=resources, instance=instance)
    result = _clean(resources, instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("clean_trips")
    staged = tmp_path / "lake" / "staging" / "clean_trips" / "green" / "green_tripdata_2020-10.parquet"
    assert materialization.metadata["uri"].value == str(staged)
    assert materialization.metadata["dagster/row_count"].value == 3000
    assert materialization.metadata["pickups_outside_month"].value == 2  # two pickups on 2020-09-30
    assert materialization.metadata["raw_file_downloaded"].value is False  # read in place from the lake
    assert pq.read_schema(staged).equals(RELEASES_SCHEMAS["green"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "has_rows": True,
        "matches_pinned_schema": True,
        "no_rows_rejected": True,
        "pickups_within_month": False,
        "dropoff_not_before_pickup": True,
    }
    assert checks["pickups_within_month"].severity == dg.AssetCheckSeverity.WARN
    assert not list((tmp_path / "work").rglob("*.parquet"))


def test_clean_trips_without_raw_file_says_what_to_do(mirror, tmp_path, instance):
    result = _clean(local_resources(tmp_path, mirror), instance)
    assert not result.success
    [message] = step_failure_messages(result)
    assert "partition green|2020-10-01: raw_trips is not in the lake at" in message
    assert "materialize raw_trips first" in message
