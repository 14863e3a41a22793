"""gcs_parquet alone: the staged file published at the seed's key, atomically, with no bytes copied."""

import dagster as dg
import pyarrow.parquet as pq

from taxi_assets.assets import build_assets
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
clean_trips, gcs_parquet, raw_trips = ASSETS.clean_trips, ASSETS.gcs_parquet, ASSETS.raw_trips

KEY = "green|2020-10-01"


def test_gcs_parquet_publishes_the_staged_file(mirror, tmp_path, instance):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    resources = local_resources(tmp_path, mirror)
    dg.materialize([raw_trips, clean_trips], partition_key=KEY, resources=resources, instance=instance)
    result = dg.materialize(
        [raw_trips, clean_trips, gcs_parquet],
        selection=[gcs_parquet],
        partition_key=KEY,
        resources=resources,
        instance=instance,
    )
    [materialization] = result.asset_materializations_for_node("gcs_parquet")
    published = tmp_path / "lake" / "data" / "green" / "green_tripdata_2020-10.parquet"
    staged = tmp_path / "lake" / "staging" / "clean_trips" / "green" / "green_tripdata_2020-10.parquet"
    assert materialization.metadata["dagster/row_count"].value == 500
    assert materialization.metadata["uri"].value == str(published)
    assert pq.read_metadata(published).num_rows == 500
    assert published.stat().st_ino == staged.stat().st_ino  # a hard link: no bytes copied
    assert not [p for p in (tmp_path / "lake").rglob("*") if p.name.endswith(".tmp")]
