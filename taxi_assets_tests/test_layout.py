"""The lake's key scheme: each lake asset declares its place, and the keys are those existing lakes have."""

import pytest

from taxi_assets import layout
from taxi_assets.assets import build_assets
from taxi_assets.assets.common import LAKE_IO
from taxi_assets.partitions import TripMonth
from taxi_assets.sources import RELEASES, TLC

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
clean_trips, gcs_parquet, raw_trips, trips_per_month_chart = (
    ASSETS.clean_trips,
    ASSETS.gcs_parquet,
    ASSETS.raw_trips,
    ASSETS.trips_per_month_chart,
)

MONTH = TripMonth.from_key("fhv|2019-01-01", RELEASES.colors)


def _key(asset, month=MONTH):
    return layout.key_for(layout.path_of(asset.metadata_by_key[asset.key]), month)


def test_each_lake_asset_declares_the_key_existing_lakes_have():
    assert _key(raw_trips) == "raw/fhv/fhv_tripdata_2019-01.csv.gz"
    assert _key(build_assets(TLC, "local").raw_trips) == "raw/fhv/fhv_tripdata_2019-01.parquet"
    assert _key(clean_trips) == "staging/clean_trips/fhv/fhv_tripdata_2019-01.parquet"
    assert _key(gcs_parquet) == "data/fhv/fhv_tripdata_2019-01.parquet"
    assert _key(trips_per_month_chart, None) == "reports/trips_per_month.png"
    sides = layout.side_paths_of(clean_trips.metadata_by_key[clean_trips.key])
    assert {name: layout.key_for(side, MONTH) for name, side in sides.items()} == {
        "rejected": "rejected/fhv/fhv_tripdata_2019-01.csv.gz"
    }


def test_every_asset_the_lake_stores_declares_where():
    in_lake = [a for a in ASSETS.all if a.get_io_manager_key_for_asset_key(a.key) == LAKE_IO]
    assert {a.key.to_user_string() for a in in_lake} == {
        "raw_trips",
        "clean_trips",
        "gcs_parquet",
        "trips_per_month_chart",
    }
    for asset in in_lake:
        template = layout.path_of(asset.metadata_by_key[asset.key])
        assert layout.is_partitioned(template) == (asset.partitions_def is not None)


def test_a_template_is_a_folder_and_the_partitions_fields():
    assert layout.partition_path("reports/extra", ".csv") == "reports/extra/{color}/{file_stem}.csv"
    assert layout.key_for("reports/extra/{ym}/{color}.csv", MONTH) == "reports/extra/2019-01/fhv.csv"
    assert layout.lake_metadata("reports/x.png") == {"lake/path": "reports/x.png"}
    assert layout.lake_metadata("a/{file_stem}.csv", notes="b/{file_stem}.txt") == {
        "lake/path": "a/{file_stem}.csv",
        "lake/side/notes": "b/{file_stem}.txt",
    }


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("../outside/{color}.csv", "must be relative to the lake root"),
        ("/abs/{file_stem}.csv", "must be relative to the lake root"),
        ("reports//{file_stem}.csv", "must be relative to the lake root"),
        ("reports/.{file_stem}.csv", "must be relative to the lake root"),
        ("reports\\{file_stem}.csv", "must be relative to the lake root"),
        ("reports/{month}.csv", r"\{month\} is not a field"),
        ("reports/{color.__class__}.csv", r"is not a field"),
        ("reports/{color!r}.csv", r"\{color!r\} is not a field"),
        ("reports/{ym:>20}.csv", r"\{ym:>20\} is not a field"),
        ("reports/{.csv", "lake path 'reports/{.csv'"),
        ("reports/{{color}}.png", "a brace is not part of a name"),
    ],
)
def test_a_template_that_could_leave_its_folder_is_refused(template, message):
    with pytest.raises(ValueError, match=message):
        layout.checked(template)


def test_a_template_fits_the_assets_partitioning():
    with pytest.raises(ValueError, match="needs a month x color partition"):
        layout.key_for("reports/{file_stem}.csv", None)
    with pytest.raises(ValueError, match="every partition .* would replace one object"):
        layout.key_for("reports/one.csv", MONTH)
    with pytest.raises(ValueError, match="must both be partitioned or not"):
        layout.lake_metadata("reports/{file_stem}.csv", notes="reports/notes.txt")
    with pytest.raises(ValueError, match="a side file's name is a Python identifier"):
        layout.side_paths_of({"lake/path": "reports/x.csv", "lake/side/": "reports/y.csv"})


def test_an_asset_without_a_lake_path_is_told_how_to_declare_one():
    with pytest.raises(ValueError, match="no 'lake/path' metadata, so the lake does not know where it lives"):
        layout.path_of({"partition_expr": "month"})
