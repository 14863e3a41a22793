"""raw_trips alone: the upstream bytes in the lake, the download's record, and its caching."""

import os

import dagster as dg

from taxi_assets.assets import build_assets
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
raw_trips = ASSETS.raw_trips

KEY = "green|2020-10-01"


def _materialize(resources, instance, **config):
    run_config = {"ops": {"raw_trips": {"config": config}}} if config else None
    result = dg.materialize(
        [raw_trips], partition_key=KEY, resources=resources, instance=instance, run_config=run_config
    )
    [materialization] = result.asset_materializations_for_node("raw_trips")
    return materialization.metadata


def test_raw_trips_stores_the_upstream_bytes(mirror, tmp_path, instance):
    source_file = mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    metadata = _materialize(local_resources(tmp_path, mirror), instance)
    stored = tmp_path / "lake" / "raw" / "green" / "green_tripdata_2020-10.csv.gz"
    assert stored.read_bytes() == source_file.read_bytes()
    assert metadata["size_bytes"].value == source_file.stat().st_size
    assert metadata["uri"].value == str(stored)
    assert metadata["download_attempts"].value == 1
    assert len(metadata["sha256"].value) == 64
    assert not list((tmp_path / "work").rglob("*.csv.gz"))  # moved into the lake, nothing left behind


def test_an_unchanged_upstream_file_is_kept_and_a_changed_one_downloaded(mirror, tmp_path, instance):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    resources = local_resources(tmp_path, mirror)
    _materialize(resources, instance)
    mirror.requests.clear()

    kept = _materialize(resources, instance)
    assert kept["download_skipped"].value is True
    assert mirror.requests == ["HEAD /green/green_tripdata_2020-10.csv.gz"]

    forced = _materialize(resources, instance, force_download=True)
    assert forced["download_skipped"].value is False

    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv")[:11])
    os.utime(mirror.path("green", "2020-10"), (10**9, 10**9))
    changed = _materialize(resources, instance)
    assert changed["download_skipped"].value is False


def test_a_lake_copy_that_is_gone_is_downloaded_again(mirror, tmp_path, instance):
    """Dagster remembers the download, but the lake lost the file (a lifecycle rule, a cleanup)."""
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    resources = local_resources(tmp_path, mirror)
    _materialize(resources, instance)
    (tmp_path / "lake" / "raw" / "green" / "green_tripdata_2020-10.csv.gz").unlink()
    again = _materialize(resources, instance)
    assert again["download_skipped"].value is False
    assert (tmp_path / "lake" / "raw" / "green" / "green_tripdata_2020-10.csv.gz").exists()
