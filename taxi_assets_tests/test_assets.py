"""Each asset on its own, invoked directly with a partitioned context and real resources."""

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_duckdb import DuckDBResource

from taxi_assets.assets import bq_rides_table, clean_trips, gcs_parquet, raw_trips
from taxi_assets.assets.warehouse import RidesLoadConfig
from taxi_assets.io_managers import LakeParquet, LakeParquetIOManager, ParquetFile
from taxi_assets.layout import published_key, raw_key
from taxi_assets.partitions import TripMonth
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.source import TripSource
from taxi_assets.resources.warehouse import DuckDBWarehouse
from taxi_assets_tests.conftest import real_rows

KEY = "green|2020-10-01"
MONTH = TripMonth.from_key(KEY)


@pytest.fixture
def lake(tmp_path):
    return LocalLake(root=str(tmp_path / "lake"))


def _context():
    return dg.build_asset_context(partition_key=KEY)


def test_raw_trips_stores_the_upstream_bytes(mirror, lake):
    source_file = mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    result = raw_trips(_context(), source=TripSource(base_url=mirror.base_url), lake=lake)
    stored = lake.stat(raw_key(MONTH))
    assert stored is not None
    with lake.local_file(raw_key(MONTH)) as path:
        assert path.read_bytes() == source_file.read_bytes()
    assert result.metadata["size_bytes"].value == source_file.stat().st_size
    assert result.metadata["download_attempts"] == 1


def _raw_in_lake(lake, tmp_path, lines):
    import gzip

    staged = tmp_path / "raw.csv.gz"
    staged.write_bytes(gzip.compress("".join(lines).encode()))
    lake.publish_file(staged, raw_key(MONTH))


def test_clean_trips_yields_a_parquet_file_and_its_checks(lake, tmp_path):
    _raw_in_lake(lake, tmp_path, real_rows("green_tripdata_2020-10_head3000.csv"))
    with dg.build_asset_context(partition_key=KEY) as context:
        events = clean_trips(context, lake=lake)
        # The output is a finished local file, alive until the IO manager has taken it.
        output = next(events)
        assert output.metadata["dagster/row_count"].value == 3000
        assert pq.read_metadata(output.value.path).num_rows == 3000
        checks = {e.check_name: e for e in events}
    assert not output.value.path.exists()  # the scratch folder is cleaned up
    assert output.metadata["pickups_outside_month"].value == 2  # two pickups on 2020-09-30
    assert {name: c.passed for name, c in checks.items()} == {
        "has_rows": True,
        "matches_pinned_schema": True,
        "pickups_within_month": False,
        "dropoff_not_before_pickup": True,
    }
    assert checks["pickups_within_month"].severity == dg.AssetCheckSeverity.WARN


def test_clean_trips_without_raw_file_says_what_to_do(lake):
    with pytest.raises(dg.Failure, match="raw file missing; materialize raw_trips first"):
        list(clean_trips(_context(), lake=lake))


def test_io_manager_round_trip_and_refuses_ranges(lake, tmp_path):
    import pyarrow as pa

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    manager = LakeParquetIOManager(lake=lake)
    out_ctx = dg.build_output_context(asset_key=dg.AssetKey("clean_trips"), partition_key=KEY)
    manager.handle_output(out_ctx, ParquetFile(path))
    key = "staging/clean_trips/green/green_tripdata_2020-10.parquet"
    assert lake.stat(key).size > 0 and not path.exists()

    in_ctx = dg.build_input_context(
        upstream_output=dg.build_output_context(asset_key=dg.AssetKey("clean_trips")),
        asset_key=dg.AssetKey("clean_trips"),
        partition_key=KEY,
    )
    loaded = manager.load_input(in_ctx)
    assert loaded == LakeParquet(key=key, uri=lake.uri(key), num_rows=3)

    with pytest.raises(dg.Failure, match="one partition per run, got 2"):
        manager._key(dg.AssetKey("clean_trips"), [KEY, "green|2020-11-01"])


def test_gcs_parquet_publishes_a_copy_atomically(lake, tmp_path):
    import pyarrow as pa

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    staged = lake.publish_file(path, "staging/clean_trips/green/green_tripdata_2020-10.parquet")
    result = gcs_parquet(_context(), clean_trips=LakeParquet(staged.key, staged.uri, 2), lake=lake)
    assert result.metadata["dagster/row_count"] == 2
    assert pq.read_metadata(lake.uri(published_key(MONTH))).num_rows == 2
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "lake").rglob("*"))


def test_bq_rides_table_replaces_its_slice(lake, tmp_path):
    from taxi_assets.cleaning import clean_trip_file

    _raw_in_lake(lake, tmp_path, real_rows("green_tripdata_2020-10_head3000.csv"))
    out = tmp_path / "clean.parquet"
    with lake.local_file(raw_key(MONTH)) as raw:
        clean_trip_file(raw, out, color="green", month_start=MONTH.month, month_end=MONTH.next_month, file_label="t")
    lake.publish_file(out, published_key(MONTH))
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "wh.duckdb")))
    for _ in range(2):
        events = list(bq_rides_table(_context(), config=RidesLoadConfig(), lake=lake, warehouse=warehouse))
    assert events[0].metadata["dagster/row_count"] == 3000
    assert events[1].passed
    assert warehouse.slice_row_counts() == {("green", MONTH.month): 3000}
