"""The lake's one key scheme."""

import pytest

from taxi_assets.layout import key_for, published_key, raw_key, staging_key
from taxi_assets.partitions import TripMonth

MONTH = TripMonth.from_key("fhv|2019-01-01")


def test_each_stage_has_its_key_in_the_seeds_layout():
    assert raw_key(MONTH) == "raw/fhv/fhv_tripdata_2019-01.csv.gz"
    assert staging_key(MONTH) == "staging/clean_trips/fhv/fhv_tripdata_2019-01.parquet"
    assert published_key(MONTH) == "data/fhv/fhv_tripdata_2019-01.parquet"


def test_keys_by_asset_name():
    assert key_for("raw_trips", MONTH) == raw_key(MONTH)
    assert key_for("clean_trips", MONTH) == staging_key(MONTH)
    assert key_for("gcs_parquet", MONTH) == published_key(MONTH)
    with pytest.raises(ValueError, match="not 'bq_rides_table'"):
        key_for("bq_rides_table", MONTH)
