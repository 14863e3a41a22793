"""Monthly statistics computed here, independently of the warehouse, from fixture CSV rows."""

import csv
import datetime as dt
import io
import statistics
from collections import defaultdict

from taxi_assets_tests.helpers import REAL

STAT_COLUMNS = (
    "trips",
    "passengers",
    "total_fare",
    "median_fare",
    "mean_distance",
    "card_tip_share",
    "pickups_outside_month",
)


def _zones() -> dict[int, str]:
    with open(REAL / "taxi_zone_lookup.csv", newline="") as f:
        return {int(r["LocationID"]): r["Borough"] for r in csv.DictReader(f)}


def expected_stats(lines: list[str], pickup: str, month: dt.date, next_month: dt.date) -> dict[str, dict]:
    """The statistics the asset must give, from the CSV rows, as `rides` holds them (NULL
    passenger counts loaded as 0)."""
    zones, by_borough = _zones(), defaultdict(list)
    for row in csv.DictReader(io.StringIO("".join(lines))):
        borough = zones.get(int(row["PULocationID"])) if row["PULocationID"] else None
        by_borough[borough or "Unknown"].append(row)
    expected = {}
    for borough, rows in by_borough.items():
        fares = [float(r["fare_amount"]) for r in rows]
        card = [r for r in rows if r["payment_type"] == "1"]
        card_fares = sum(float(r["fare_amount"]) for r in card)
        pickups = [dt.datetime.fromisoformat(r[pickup]) for r in rows]
        start, end = dt.datetime.combine(month, dt.time()), dt.datetime.combine(next_month, dt.time())
        expected[borough] = {
            "trips": len(rows),
            "passengers": sum(int(r["passenger_count"] or 0) for r in rows),
            "total_fare": sum(fares),
            "median_fare": statistics.median(fares),
            "mean_distance": statistics.mean(float(r["trip_distance"]) for r in rows),
            # NULL in SQL where no card fare was paid
            "card_tip_share": sum(float(r["tip_amount"]) for r in card) / card_fares if card_fares else None,
            "pickups_outside_month": sum(not start <= p < end for p in pickups),
        }
    return expected
