"""Parquet files shaped like the TLC's own, one per schema era of each color, each era described
in one line in ERAS (read from public sources: the real files cannot be reached here). Values are
small and deterministic so that tests can count and compare them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

I32, I64, F64, STR, LSTR, TS = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.large_string(), pa.timestamp("us")
NULL = pa.null()


@dataclass(frozen=True)
class Era:
    color: str
    month: str  # YYYY-MM of the fixture
    what: str  # the quirks this era carries
    columns: tuple[tuple[str, pa.DataType], ...]
    single_row_group: bool = False


def _yellow(
    ids=I64, counts=I64, strings=STR, airport=("airport_fee", NULL), congestion=F64, improvement=F64, cbd=False
):
    columns = [
        ("VendorID", ids), ("tpep_pickup_datetime", TS), ("tpep_dropoff_datetime", TS), ("passenger_count", counts),
        ("trip_distance", F64), ("RatecodeID", counts), ("store_and_fwd_flag", strings), ("PULocationID", ids),
        ("DOLocationID", ids), ("payment_type", I64), ("fare_amount", F64), ("extra", F64), ("mta_tax", F64),
        ("tip_amount", F64), ("tolls_amount", F64), ("improvement_surcharge", improvement), ("total_amount", F64),
        ("congestion_surcharge", congestion), airport,
    ]  # fmt: skip
    return tuple(columns + ([("cbd_congestion_fee", F64)] if cbd else []))


def _green(ids=I64, counts=F64, strings=STR, ehail=F64, cbd=False):
    columns = [
        ("VendorID", ids), ("lpep_pickup_datetime", TS), ("lpep_dropoff_datetime", TS), ("store_and_fwd_flag", strings),
        ("RatecodeID", counts), ("PULocationID", ids), ("DOLocationID", ids), ("passenger_count", counts),
        ("trip_distance", F64), ("fare_amount", F64), ("extra", F64), ("mta_tax", F64), ("tip_amount", F64),
        ("tolls_amount", F64), ("ehail_fee", ehail), ("improvement_surcharge", F64), ("total_amount", F64),
        ("payment_type", counts), ("trip_type", counts), ("congestion_surcharge", F64),
    ]  # fmt: skip
    return tuple(columns + ([("cbd_congestion_fee", F64)] if cbd else []))


def _fhv(locations, sr_flag, strings=STR):
    return (
        ("dispatching_base_num", strings), ("pickup_datetime", TS), ("dropOff_datetime", TS),
        ("PUlocationID", locations), ("DOlocationID", locations), ("SR_Flag", sr_flag),
        ("Affiliated_base_number", strings),
    )  # fmt: skip


def _fhvhv(ids=I64, strings=STR, airport=F64, wav_match=STR, cbd=False):
    columns = [
        ("hvfhs_license_num", strings), ("dispatching_base_num", strings), ("originating_base_num", strings),
        ("request_datetime", TS), ("on_scene_datetime", TS), ("pickup_datetime", TS), ("dropoff_datetime", TS),
        ("PULocationID", ids), ("DOLocationID", ids), ("trip_miles", F64), ("trip_time", I64),
        ("base_passenger_fare", F64), ("tolls", F64), ("bcf", F64), ("sales_tax", F64), ("congestion_surcharge", F64),
        ("airport_fee", airport), ("tips", F64), ("driver_pay", F64), ("shared_request_flag", strings),
        ("shared_match_flag", strings), ("access_a_ride_flag", strings), ("wav_request_flag", strings),
        ("wav_match_flag", wav_match),
    ]  # fmt: skip
    return tuple(columns + ([("cbd_congestion_fee", F64)] if cbd else []))


ERAS = (
    Era(
        "yellow",
        "2011-03",
        "INT64 ids and counts; congestion_surcharge and airport_fee null-typed",
        _yellow(congestion=NULL),
    ),
    Era("yellow", "2014-08", "improvement_surcharge null-typed as well", _yellow(congestion=NULL, improvement=NULL)),
    Era("yellow", "2019-06", "passenger_count and RatecodeID as DOUBLE", _yellow(counts=F64)),
    Era("yellow", "2021-01", "DOUBLE counts, airport_fee a DOUBLE", _yellow(counts=F64, airport=("airport_fee", F64))),
    Era(
        "yellow",
        "2023-01",
        "one row group for the whole month",
        _yellow(counts=F64, airport=("airport_fee", F64)),
        single_row_group=True,
    ),
    Era(
        "yellow",
        "2023-06",
        "INT32 ids, large_string, Airport_fee capitalized",
        _yellow(ids=I32, strings=LSTR, airport=("Airport_fee", F64)),
    ),
    Era(
        "yellow",
        "2025-02",
        "cbd_congestion_fee appears",
        _yellow(ids=I32, strings=LSTR, airport=("Airport_fee", F64), cbd=True),
    ),
    Era("green", "2015-05", "DOUBLE counts, ehail_fee a DOUBLE", _green()),
    Era("green", "2020-10", "ehail_fee null-typed", _green(ehail=NULL)),
    Era("green", "2023-04", "INT32 ids, INT64 counts, large_string", _green(ids=I32, counts=I64, strings=LSTR)),
    Era("green", "2025-01", "cbd_congestion_fee", _green(ids=I32, counts=I64, strings=LSTR, cbd=True)),
    Era("fhv", "2018-02", "dropOff_datetime, PUlocationID casings; ids and SR_Flag as DOUBLE", _fhv(F64, F64)),
    Era("fhv", "2019-04", "INT64 ids, SR_Flag null-typed", _fhv(I64, NULL)),
    Era("fhv", "2020-07", "ids back to DOUBLE", _fhv(F64, NULL)),
    Era("fhv", "2023-03", "INT64 ids and SR_Flag, large_string", _fhv(I64, I64, LSTR)),
    Era("fhvhv", "2019-02", "airport_fee and wav_match_flag null-typed", _fhvhv(airport=NULL, wav_match=NULL)),
    Era("fhvhv", "2021-06", "all typed", _fhvhv()),
    Era("fhvhv", "2023-05", "INT32 ids, large_string", _fhvhv(ids=I32, strings=LSTR, wav_match=LSTR)),
    Era("fhvhv", "2025-03", "cbd_congestion_fee", _fhvhv(ids=I32, strings=LSTR, wav_match=LSTR, cbd=True)),
)

PICKUP = {"yellow": "tpep_pickup_datetime", "green": "lpep_pickup_datetime", "fhv": "pickup_datetime",
          "fhvhv": "pickup_datetime"}  # fmt: skip


def _values(name: str, dtype: pa.DataType, rows: int, month: dt.date, color: str) -> pa.Array:
    if dtype == NULL:
        return pa.nulls(rows)
    if dtype == TS:
        start = dt.datetime.combine(month, dt.time())
        minutes = 2 if name.startswith(("tpep_drop", "lpep_drop", "dropoff", "dropOff")) else 0
        return pa.array([start + dt.timedelta(minutes=k % 40_000 + minutes) for k in range(rows)], TS)
    if dtype in (I32, I64):
        values = [None if k % 11 == 0 else 1 + k % 265 for k in range(rows)]
        return pa.array(values, dtype)
    if dtype == F64:
        whole = name in ("passenger_count", "RatecodeID", "payment_type", "trip_type", "PUlocationID", "DOlocationID",
                         "SR_Flag")  # fmt: skip
        values = [None if k % 13 == 0 else float(1 + k % 5) if whole else round(k * 0.25 % 97, 2) for k in range(rows)]
        return pa.array(values, F64)
    return pa.array([None if k % 7 == 0 else f"{color[0].upper()}{k % 50:05d}" for k in range(rows)], dtype)


def write_era(era: Era, path: Path, rows: int = 1_000) -> Path:
    month = dt.date.fromisoformat(era.month + "-01")
    table = pa.table({n: _values(n, t, rows, month, era.color) for n, t in era.columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=rows if era.single_row_group else max(rows // 4, 1))
    return path
