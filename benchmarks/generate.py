"""Realistic synthetic yellow months at any size, with the real files' quirks.

- ~7% of rows with VendorID, passenger_count, RatecodeID, store_and_fwd_flag and payment_type
  empty (as in the real 2020-2021 files: pandas then infers float64 for those columns);
- pickups outside the month: 0.05% on the last hours of the previous month, a few from 2008 and
  from the next month;
- `.20`-style decimals in trip_distance, negative fares and totals (refunds), passenger_count 0.

Columns and their order are the DataTalksClub yellow release's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

HEADER = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,"
    "store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,"
    "tolls_amount,improvement_surcharge,total_amount,congestion_surcharge"
)
EMPTY_SHARE = 0.07
CHUNK_ROWS = 500_000


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pc.strftime(pa.array(seconds.astype("datetime64[s]")), format="%Y-%m-%d %H:%M:%S")


def _number(values: np.ndarray) -> pa.Array:
    """As the releases write money: "8", "0.5", "11.8" (no trailing zeros)."""
    text = pa.array(values).cast(pa.string())
    return pc.replace_substring_regex(text, r"\.0$", "")


def _decimal_without_leading_zero(values: np.ndarray) -> pa.Array:
    """2.10 -> "2.10", 0.20 -> ".20", as the release files write trip_distance."""
    cents = np.round(values * 100).astype(np.int64)
    whole = pa.array((cents // 100).astype(str))
    whole = pc.if_else(pc.equal(whole, "0"), "", whole)
    frac = pc.utf8_lpad(pa.array((cents % 100).astype(str)), 2, "0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _chunk(rng: np.random.Generator, n: int, month: dt.date) -> pa.Table:
    start = np.datetime64(month.isoformat(), "s").astype(np.int64)
    next_month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    span = np.datetime64(next_month.isoformat(), "s").astype(np.int64) - start
    pickup = start + rng.integers(0, span, n)
    early = rng.random(n) < 0.0005
    pickup[early] = start - rng.integers(1, 6 * 3600, early.sum())
    odd = rng.random(n) < 0.00002
    pickup[odd] = np.datetime64("2008-12-31T23:00:00", "s").astype(np.int64) + rng.integers(0, 3600, odd.sum())
    late = rng.random(n) < 0.00002
    pickup[late] = start + span + rng.integers(0, 3600, late.sum())
    # The releases are in pickup order only roughly (rows within ~40 minutes are shuffled); both
    # extremes distort Parquet sizes and gzip times.
    pickup.sort()
    pickup += rng.integers(0, 2400, n)
    dropoff = pickup + rng.gamma(2.0, 400, n).astype(np.int64)

    distance = np.round(rng.gamma(1.5, 1.8, n), 2)
    minutes = (dropoff - pickup) / 60
    # The meter: $2.50 flag drop, then $0.50 per fifth of a mile or per slow minute.
    fare = 2.5 + 0.5 * np.round(distance * 5 + minutes * 0.2)
    refund = rng.random(n) < 0.01
    fare[refund] = -fare[refund]
    extra = rng.choice([0.0, 0.5, 1.0, 2.5, 3.0], n)
    tolls = np.where(rng.random(n) < 0.05, 6.12, 0.0)
    congestion = np.where(rng.random(n) < 0.8, 2.5, 0.0)
    base = fare + extra + 0.5 + 0.3 + tolls + congestion
    # Card tips are a percentage chosen on the screen; cash tips are not recorded.
    tip = np.where(rng.random(n) < 0.35, 0.0, np.round(base * rng.choice([0.2, 0.25, 0.3], n), 2))
    total = np.round(base + tip, 2)
    empty = rng.random(n) < EMPTY_SHARE

    def ints(values):
        return pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), pa.array(values.astype(str)))

    columns = {
        "VendorID": ints(rng.integers(1, 3, n)),
        "tpep_pickup_datetime": _timestamps(pickup),
        "tpep_dropoff_datetime": _timestamps(dropoff),
        "passenger_count": ints(rng.choice([0, 1, 1, 1, 1, 2, 2, 3, 5, 6], n)),
        "trip_distance": _decimal_without_leading_zero(distance),
        "RatecodeID": ints(rng.choice([1, 1, 1, 1, 2, 5], n)),
        "store_and_fwd_flag": pc.if_else(
            pa.array(empty), pa.scalar(None, pa.string()), pa.array(rng.choice(["N", "N", "Y"], n))
        ),
        "PULocationID": pa.array(rng.integers(1, 266, n).astype(str)),
        "DOLocationID": pa.array(rng.integers(1, 266, n).astype(str)),
        "payment_type": ints(rng.choice([1, 1, 2, 3, 4], n)),
        "fare_amount": _number(fare),
        "extra": _number(extra),
        "mta_tax": _number(np.full(n, 0.5)),
        "tip_amount": _number(tip),
        "tolls_amount": _number(tolls),
        "improvement_surcharge": _number(np.full(n, 0.3)),
        "total_amount": _number(total),
        "congestion_surcharge": _number(congestion),
    }
    return pa.table(columns)


def generate(path: Path, rows: int, month: dt.date = dt.date(2021, 1, 1), seed: int = 7) -> Path:
    """Write `rows` rows as a release-style `.csv.gz` at `path` (gzip level 6, like the releases)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with gzip.open(tmp, "wb", compresslevel=6) as out:
        out.write((HEADER + "\n").encode())
        written = 0
        while written < rows:
            n = min(CHUNK_ROWS, rows - written)
            pacsv.write_csv(_chunk(rng, n, month), out, write_options=options)
            written += n
    tmp.replace(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--month", default="2021-01", help="YYYY-MM")
    args = parser.parse_args()
    generate(args.out, args.rows, dt.date.fromisoformat(args.month + "-01"))
    print(args.out, args.out.stat().st_size)
