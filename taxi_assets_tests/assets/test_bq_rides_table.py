"""bq_rides_table alone: the published file's slice of `rides`, replaced on rerun."""

import datetime as dt

import dagster as dg

from taxi_assets.assets import build_assets
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
bq_rides_table, clean_trips, gcs_parquet, raw_trips = (
    ASSETS.bq_rides_table,
    ASSETS.clean_trips,
    ASSETS.gcs_parquet,
    ASSETS.raw_trips,
)

KEY = "green|2020-10-01"


def test_bq_rides_table_replaces_its_slice(mirror, tmp_path, instance):
    head = real_rows("green_tripdata_2020-10_head3000.csv")
    mirror.publish("green", "2020-10", head + real_rows("green_tripdata_2020-10_tail500.csv")[1:])
    resources = local_resources(tmp_path, mirror)
    lake_assets = [raw_trips, clean_trips, gcs_parquet]
    dg.materialize(lake_assets, partition_key=KEY, resources=resources, instance=instance)
    for _ in range(2):
        result = dg.materialize(
            [*lake_assets, bq_rides_table],
            selection=[bq_rides_table],
            partition_key=KEY,
            resources=resources,
            instance=instance,
        )
    [materialization] = result.asset_materializations_for_node("bq_rides_table")
    assert materialization.metadata["dagster/row_count"].value == 3500
    assert materialization.metadata["passenger_count_filled_with_0"].value == 500  # from the footer's statistics
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "slice_matches_lake_file" and check.passed
    assert resources["warehouse"].slice_row_counts() == {("green", dt.date(2020, 10, 1)): 3500}
