"""Pinned per-color schemas, header casings, and the unified `rides` table."""

import pyarrow as pa

from taxi_assets.schema import (
    RELEASES_SCHEMAS,
    RIDES_SCHEMA,
    TLC_SCHEMAS,
    canonical_column,
    rides_select_list,
    rides_source_column,
)


def test_every_color_has_pickup_and_dropoff_timestamps_and_integer_zones():
    for source, schemas in (("releases", RELEASES_SCHEMAS), ("tlc", TLC_SCHEMAS)):
        for color, schema in schemas.items():
            assert schema.field("PULocationID").type == pa.int64(), (source, color)
            timestamps = [f.name for f in schema if f.type == pa.timestamp("us")]
            assert len(timestamps) == 2 + (color == "fhvhv") * 2, (source, color)  # fhvhv: request, on scene


def test_fhv_header_casings_map_to_the_pinned_names():
    fhv, yellow = RELEASES_SCHEMAS["fhv"], RELEASES_SCHEMAS["yellow"]
    assert canonical_column(fhv, "dropOff_datetime") == "dropoff_datetime"
    assert canonical_column(fhv, "PUlocationID") == "PULocationID"
    assert canonical_column(fhv, '"SR_Flag"') == "SR_Flag"
    assert canonical_column(yellow, "lpep_pickup_datetime") is None


def test_rides_unifies_pickup_names_and_nulls_what_a_color_lacks():
    assert RIDES_SCHEMA.names[:4] == ["color", "month", "pickup_datetime", "dropoff_datetime"]
    assert rides_source_column("green", "pickup_datetime") == "lpep_pickup_datetime"
    assert rides_source_column("fhv", "passenger_count") is None
    select = rides_select_list("fhv", quote=lambda n: f'"{n}"', sql_type=str, fill_passenger_count=True)
    assert 'CAST("pickup_datetime" AS timestamp[us]) AS "pickup_datetime"' in select
    assert 'CAST(NULL AS int64) AS "passenger_count"' in select  # fhv has no count: NULL, never 0
    filled = rides_select_list("yellow", quote=lambda n: n, sql_type=str, fill_passenger_count=True)
    assert "COALESCE(CAST(passenger_count AS int64), 0) AS passenger_count" in filled
    assert len(select) == len(RIDES_SCHEMA) - 2  # color and month come from the partition
