"""Pinned Arrow schemas: one per color for every month, and the unified warehouse `rides` schema.

Pinning matters because pandas' inference typed a column float64 in months with empty values and
int64 in others, and BigQuery refuses to load such months into one table
("Parquet column 'payment_type' has type DOUBLE which does not match the target cpp_type INT64").
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

TIMESTAMP = pa.timestamp("us")
INT = pa.int64()
FLOAT = pa.float64()
STRING = pa.string()


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype, nullable=True) for name, dtype in fields])


# Column order is the order of the release files' headers.
RELEASES_SCHEMAS: dict[str, pa.Schema] = {
    "yellow": _schema(
        ("VendorID", INT),
        ("tpep_pickup_datetime", TIMESTAMP),
        ("tpep_dropoff_datetime", TIMESTAMP),
        ("passenger_count", INT),
        ("trip_distance", FLOAT),
        ("RatecodeID", INT),
        ("store_and_fwd_flag", STRING),
        ("PULocationID", INT),
        ("DOLocationID", INT),
        ("payment_type", INT),
        ("fare_amount", FLOAT),
        ("extra", FLOAT),
        ("mta_tax", FLOAT),
        ("tip_amount", FLOAT),
        ("tolls_amount", FLOAT),
        ("improvement_surcharge", FLOAT),
        ("total_amount", FLOAT),
        ("congestion_surcharge", FLOAT),
    ),
    "green": _schema(
        ("VendorID", INT),
        ("lpep_pickup_datetime", TIMESTAMP),
        ("lpep_dropoff_datetime", TIMESTAMP),
        ("store_and_fwd_flag", STRING),
        ("RatecodeID", INT),
        ("PULocationID", INT),
        ("DOLocationID", INT),
        ("passenger_count", INT),
        ("trip_distance", FLOAT),
        ("fare_amount", FLOAT),
        ("extra", FLOAT),
        ("mta_tax", FLOAT),
        ("tip_amount", FLOAT),
        ("tolls_amount", FLOAT),
        ("ehail_fee", FLOAT),
        ("improvement_surcharge", FLOAT),
        ("total_amount", FLOAT),
        ("payment_type", INT),
        ("trip_type", INT),
        ("congestion_surcharge", FLOAT),
    ),
    "fhv": _schema(
        ("dispatching_base_num", STRING),
        ("pickup_datetime", TIMESTAMP),
        ("dropoff_datetime", TIMESTAMP),
        ("PULocationID", INT),
        ("DOLocationID", INT),
        ("SR_Flag", STRING),
        ("Affiliated_base_number", STRING),
    ),
}

# The TLC's own Parquet files: the same columns, plus those the releases never had, for every era
# from 2011 (`airport_fee` from 2011 on, null-typed for years; `cbd_congestion_fee` from 2025-01),
# and the high-volume FHV trips (fhvhv, from 2019-02). Types are pinned through every era: ids
# written as INT32, INT64 or DOUBLE, strings as string or large_string, all-NULL columns as the
# null type, all land as the types below (`cleaning/parquet_input.py`).
TLC_SCHEMAS: dict[str, pa.Schema] = {
    "yellow": pa.schema(
        list(RELEASES_SCHEMAS["yellow"]) + [pa.field("airport_fee", FLOAT), pa.field("cbd_congestion_fee", FLOAT)]
    ),
    "green": pa.schema(list(RELEASES_SCHEMAS["green"]) + [pa.field("cbd_congestion_fee", FLOAT)]),
    "fhv": RELEASES_SCHEMAS["fhv"],
    "fhvhv": _schema(
        ("hvfhs_license_num", STRING),
        ("dispatching_base_num", STRING),
        ("originating_base_num", STRING),
        ("request_datetime", TIMESTAMP),
        ("on_scene_datetime", TIMESTAMP),
        ("pickup_datetime", TIMESTAMP),
        ("dropoff_datetime", TIMESTAMP),
        ("PULocationID", INT),
        ("DOLocationID", INT),
        ("trip_miles", FLOAT),
        ("trip_time", INT),
        ("base_passenger_fare", FLOAT),
        ("tolls", FLOAT),
        ("bcf", FLOAT),
        ("sales_tax", FLOAT),
        ("congestion_surcharge", FLOAT),
        ("airport_fee", FLOAT),
        ("tips", FLOAT),
        ("driver_pay", FLOAT),
        ("shared_request_flag", STRING),
        ("shared_match_flag", STRING),
        ("access_a_ride_flag", STRING),
        ("wav_request_flag", STRING),
        ("wav_match_flag", STRING),
        ("cbd_congestion_fee", FLOAT),
    ),
}

# Columns a file may lack; they are kept in the pinned schema, all NULL.
# (TLC's own 2019 FHV export has no Affiliated_base_number; cbd_congestion_fee began in 2025.)
OPTIONAL_COLUMNS: dict[str, frozenset[str]] = {
    "yellow": frozenset({"cbd_congestion_fee"}),
    "green": frozenset({"cbd_congestion_fee"}),
    "fhv": frozenset({"Affiliated_base_number"}),
    "fhvhv": frozenset({"cbd_congestion_fee"}),
}

PICKUP_COLUMN = {
    "yellow": "tpep_pickup_datetime",
    "green": "lpep_pickup_datetime",
    "fhv": "pickup_datetime",
    "fhvhv": "pickup_datetime",
}
DROPOFF_COLUMN = {
    "yellow": "tpep_dropoff_datetime",
    "green": "lpep_dropoff_datetime",
    "fhv": "dropoff_datetime",
    "fhvhv": "dropoff_datetime",
}


def canonical_column(pinned: pa.Schema, header_name: str) -> str | None:
    """The pinned name for a header cell, or None if the color's `pinned` schema has no such column.

    Matching ignores case: the FHV files spell `dropOff_datetime` / `PUlocationID` in 2019 and
    `dropoff_datetime` / `PULocationID` later.
    """
    wanted = header_name.strip().strip('"').lower()
    for name in pinned.names:
        if name.lower() == wanted:
            return name
    return None


# The analytics tables beside `rides`, written by the warehouse itself (`Warehouse.replace_table`,
# `Warehouse.replace_rows`): the zone lookup and the per-borough monthly statistics.
ZONES_TABLE = "zones"
STATS_TABLE = "monthly_trip_stats"

# The warehouse table: one for all colors. Per-color pickup/dropoff names are unified; a column a
# color lacks is NULL for that color's rows. The TLC's schemas hold every column the releases' do,
# with the same types, so `rides` is the same table for either source.
RIDES_TABLE = "rides"
_RIDE_EXTRA_ORDER = (
    "VendorID",
    "passenger_count",
    "trip_distance",
    "RatecodeID",
    "store_and_fwd_flag",
    "payment_type",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "ehail_fee",
    "improvement_surcharge",
    "total_amount",
    "congestion_surcharge",
    "trip_type",
    "dispatching_base_num",
    "SR_Flag",
    "Affiliated_base_number",
)
RIDES_SCHEMA = pa.schema(
    [
        pa.field("color", STRING, nullable=False),
        pa.field("month", pa.date32(), nullable=False),
        pa.field("pickup_datetime", TIMESTAMP),
        pa.field("dropoff_datetime", TIMESTAMP),
        pa.field("PULocationID", INT),
        pa.field("DOLocationID", INT),
    ]
    + [
        pa.field(name, next(s.field(name).type for s in TLC_SCHEMAS.values() if name in s.names))
        for name in _RIDE_EXTRA_ORDER
    ]
)


# High-volume FHV columns that mean what a `rides` column means under another name. fhvhv's other
# columns (request and on-scene times, driver pay, the flags...) stay in its lake files, which the
# warehouse reads in place through a view (DuckDB) or an external table (BigQuery): widening
# `rides` by 13 columns that every other color leaves NULL would cost every query on it.
ALL_COLUMNS_VIEW = {"fhvhv": "fhvhv_trips"}
RIDES_RENAMES = {
    "fhvhv": {
        "trip_distance": "trip_miles",
        "fare_amount": "base_passenger_fare",
        "tip_amount": "tips",
        "tolls_amount": "tolls",
    }
}


def rides_source_column(color: str, rides_column: str) -> str | None:
    """Which column of a color's lake file feeds a `rides` column (None: NULL for that color)."""
    if rides_column == "pickup_datetime":
        return PICKUP_COLUMN[color]
    if rides_column == "dropoff_datetime":
        return DROPOFF_COLUMN[color]
    source = RIDES_RENAMES.get(color, {}).get(rides_column, rides_column)
    return source if source in TLC_SCHEMAS[color].names else None


def rides_select_list(
    color: str,
    *,
    quote: Callable[[str], str],
    sql_type: Callable[[pa.DataType], str],
    fill_passenger_count: bool,
) -> list[str]:
    """SQL select expressions (excluding color and month) mapping a lake file onto `rides`.

    `quote` and `sql_type` spell identifiers and types in the warehouse's dialect; the rest is
    standard SQL (CAST, COALESCE) that DuckDB and BigQuery share. Every column is cast to the
    `rides` type, so the load does not depend on how the engine typed the file's columns: real
    BigQuery reads the lake's timezone-naive timestamps as DATETIME, and `rides` holds TIMESTAMP.
    """
    exprs = []
    for field in RIDES_SCHEMA:
        if field.name in ("color", "month"):
            continue
        source = rides_source_column(color, field.name)
        value = "NULL" if source is None else quote(source)
        expr = f"CAST({value} AS {sql_type(field.type)})"
        if field.name == "passenger_count" and fill_passenger_count and source is not None:
            expr = f"COALESCE({expr}, 0)"
        exprs.append(f"{expr} AS {quote(field.name)}")
    return exprs
