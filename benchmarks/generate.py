"""Realistic synthetic yellow and FHV months at any size, with the real files' quirks.

Yellow (`generate(path, rows)`, default month 2021-01):

- ~7% of rows with VendorID, passenger_count, RatecodeID, store_and_fwd_flag and payment_type
  empty (as in the real 2020-2021 files: pandas then infers float64 for those columns);
- pickups outside the month: 0.05% on the last hours of the previous month, a few from 2008 and
  from the next month;
- `.20`-style decimals in trip_distance, negative fares and totals (refunds), passenger_count 0.

Columns and their order are the DataTalksClub yellow release's.

FHV (`generate(path, rows, color="fhv")` or `generate_fhv`, default month 2019-01, whose real file has
23,143,222 rows): the DataTalksClub release's header and casing (`dropOff_datetime`, `PUlocationID`,
`DOlocationID`), and the 2019 quirks:

- PUlocationID empty on ~80% of rows, DOlocationID on ~15%; SR_Flag empty except a few `1`
  (shared rides, high-volume bases only); Affiliated_base_number the dispatching base, another
  base, or empty (per base: B02510 leaves it empty, as in the release);
- ~830 bases from B00001..B03300, the high-volume ones (B025xx-B028xx) with ~85% of trips; a third
  of the small bases record times on the minute (`00:30:00`);
- rows in pickup-hour order, by base within the hour, unordered within a base (as the TLC export);
- pickups outside the month (the last hours of the previous month, the first of the next), dropoffs
  a day late (`00:02:29` -> next day `00:25:30`), a few dropoffs before the pickup.

    python benchmarks/generate.py 1000000 bench/fhv_tripdata_2019-01.csv.gz --color fhv
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
    """ "2019-01-01 00:30:00" (Arrow's cast writes this format, much faster than strftime: docs/performance.md)."""
    return pa.array(seconds.astype("datetime64[s]")).cast(pa.string())


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


FHV_HEADER = (
    "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
)
FHV_PU_EMPTY = 0.80
FHV_DO_EMPTY = 0.15
FHV_SHARED = 0.03  # SR_Flag 1, on high-volume bases' rows
# Uber, Lyft (B02510), Via and Juno bases: most of 2019-01's trips (high-volume trips got their own
# `fhvhv` files from 2019-02).
HV_BASES = (
    "B02510 B02512 B02598 B02617 B02682 B02764 B02765 B02835 B02836 B02864 B02865 B02866 B02867 "
    "B02869 B02870 B02871 B02872 B02875 B02876 B02877 B02878 B02879 B02880 B02882 B02883 B02884 "
    "B02887 B02888 B02889"
).split()
HV_SHARE = 0.85


class _FhvBases:
    """The month's bases, sorted, with per-base habits; fixed (not seeded) so every size shares them."""

    def __init__(self) -> None:
        rng = np.random.default_rng(2019)
        hv = {int(b[1:]) for b in HV_BASES}
        small = rng.choice(np.array(sorted(set(range(1, 3301)) - hv)), 800, replace=False)
        numbers = np.sort(np.concatenate([small, np.array(sorted(hv))]))
        self.names = pa.array([f"B{n:05d}" for n in numbers])
        is_hv = np.isin(numbers, list(hv))
        # Zipf-like shares within each group: a few bases carry most of their group's trips.
        weight = np.empty(len(numbers))
        weight[is_hv] = HV_SHARE * _zipf(rng, is_hv.sum(), 0.8)
        weight[~is_hv] = (1 - HV_SHARE) * _zipf(rng, (~is_hv).sum(), 1.1)
        self.cumulative = np.cumsum(weight / weight.sum())
        self.is_hv = is_hv
        self.on_the_minute = ~is_hv & (rng.random(len(numbers)) < 1 / 3)
        # Affiliated_base_number: itself (most), another base (5% of small ones), empty (10% and B02510).
        affiliated = np.arange(len(numbers))
        other = ~is_hv & (rng.random(len(numbers)) < 0.05)
        affiliated[other] = rng.integers(0, len(numbers), other.sum())
        empty = (~is_hv & (rng.random(len(numbers)) < 0.10)) | (numbers == 2510)
        self.affiliated = np.ma.masked_array(affiliated, empty)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cumulative, rng.random(n)), len(self.cumulative) - 1)


def _zipf(rng: np.random.Generator, k: int, s: float) -> np.ndarray:
    weight = 1.0 / np.arange(1, k + 1) ** s
    return rng.permutation(weight / weight.sum())


_ZONE_WEIGHTS = np.random.default_rng(265).permutation(1.0 / np.arange(1, 266) ** 0.9)
_ZONE_CUMULATIVE = np.cumsum(_ZONE_WEIGHTS / _ZONE_WEIGHTS.sum())


def _zones(rng: np.random.Generator, n: int, empty_share: float) -> pa.Array:
    zone = np.minimum(np.searchsorted(_ZONE_CUMULATIVE, rng.random(n)), 264) + 1
    return pa.array(zone, mask=rng.random(n) < empty_share).cast(pa.string())


def _fhv_chunk(rng: np.random.Generator, bases: _FhvBases, n: int, first: int, last: int, month: dt.date) -> pa.Table:
    """`n` rows with pickups in [first, last) seconds: the chunk's slice of the month."""
    start = np.datetime64(month.isoformat(), "s").astype(np.int64)
    end = np.datetime64(_next_month(month).isoformat(), "s").astype(np.int64)
    base = bases.draw(rng, n)
    pickup = rng.integers(first, max(last, first + 1), n)
    early = rng.random(n) < 0.0002
    pickup[early] = start - rng.integers(1, 6 * 3600, early.sum())
    late = rng.random(n) < 0.0001
    pickup[late] = end + rng.integers(0, 3 * 3600, late.sum())
    dropoff = pickup + rng.gamma(2.0, 540, n).astype(np.int64)
    day_late = rng.random(n) < 0.003
    dropoff[day_late] += 86_400
    backwards = rng.random(n) < 0.0001
    dropoff[backwards] = pickup[backwards] - rng.integers(1, 3600, backwards.sum())
    minute = bases.on_the_minute[base]
    pickup[minute] -= pickup[minute] % 60
    dropoff[minute] -= dropoff[minute] % 60
    # TLC's order: by pickup hour, by base within the hour, unordered within a base.
    order = np.lexsort((base, pickup // 3600))
    base, pickup, dropoff = base[order], pickup[order], dropoff[order]

    shared = bases.is_hv[base] & (rng.random(n) < FHV_SHARED)
    affiliated = bases.affiliated[base]
    affiliated_mask = np.ma.getmaskarray(affiliated) | (rng.random(n) < 0.01)
    columns = {
        "dispatching_base_num": bases.names.take(pa.array(base)),
        "pickup_datetime": _timestamps(pickup),
        "dropOff_datetime": _timestamps(dropoff),
        "PUlocationID": _zones(rng, n, FHV_PU_EMPTY),
        "DOlocationID": _zones(rng, n, FHV_DO_EMPTY),
        "SR_Flag": pa.array(np.ones(n, np.int8), mask=~shared).cast(pa.string()),
        "Affiliated_base_number": bases.names.take(pa.array(np.ma.getdata(affiliated), mask=affiliated_mask)),
    }
    return pa.table(columns)


def _next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _write(path: Path, header: str, tables) -> Path:
    """Stream tables as a release-style `.csv.gz` at `path` (gzip level 6, like the releases)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with gzip.open(tmp, "wb", compresslevel=6) as out:
        out.write((header + "\n").encode())
        for table in tables:
            pacsv.write_csv(table, out, write_options=options)
    tmp.replace(path)
    return path


def _sizes(rows: int):
    written = 0
    while written < rows:
        n = min(CHUNK_ROWS, rows - written)
        yield written, n
        written += n


def generate_fhv(path: Path, rows: int, month: dt.date = dt.date(2019, 1, 1), seed: int = 7) -> Path:
    """Write `rows` FHV rows as a release-style `.csv.gz` at `path`, in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    bases = _FhvBases()
    start = int(np.datetime64(month.isoformat(), "s").astype(np.int64))
    span = int(np.datetime64(_next_month(month).isoformat(), "s").astype(np.int64)) - start
    tables = (
        _fhv_chunk(rng, bases, n, start + span * done // rows, start + span * (done + n) // rows, month)
        for done, n in _sizes(rows)
    )
    return _write(path, FHV_HEADER, tables)


def generate(path: Path, rows: int, month: dt.date | None = None, seed: int = 7, color: str = "yellow") -> Path:
    """Write `rows` rows of `color` (yellow or fhv) as a release-style `.csv.gz` at `path`.

    `month` defaults to 2021-01 for yellow, 2019-01 for fhv.
    """
    if color == "fhv":
        return generate_fhv(path, rows, month or dt.date(2019, 1, 1), seed)
    if color != "yellow":
        raise ValueError(f"no generator for {color!r} (yellow or fhv)")
    rng = np.random.default_rng(seed)
    month = month or dt.date(2021, 1, 1)
    return _write(path, HEADER, (_chunk(rng, n, month) for _, n in _sizes(rows)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--color", choices=["yellow", "fhv"], default="yellow")
    parser.add_argument("--month", help="YYYY-MM (default: 2021-01 for yellow, 2019-01 for fhv)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    month = dt.date.fromisoformat(args.month + "-01") if args.month else None
    generate(args.out, args.rows, month, args.seed, args.color)
    print(args.out, args.out.stat().st_size)
