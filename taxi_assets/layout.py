"""The lake's one key scheme: where each stored stage of a partition lives, relative to the lake root.

    raw/{color}/{color}_tripdata_{YYYY-MM}.csv.gz                 raw_trips: the upstream file (.parquet from the TLC)
    staging/clean_trips/{color}/{color}_tripdata_{YYYY-MM}.parquet  clean_trips: typed Parquet, not yet checked
    data/{color}/{color}_tripdata_{YYYY-MM}.parquet                 gcs_parquet: the published file (the seed's layout)
    rejected/{color}/{color}_tripdata_{YYYY-MM}.csv.gz              clean_trips' quarantined lines, if any
    reports/trips_per_month.png                                     trips_per_month_chart (not partitioned)

Only the lake IO manager asks for keys; keys are built from a validated `TripMonth` (a color of
COLORS and the first day of a month), so nothing a user types can reach outside these folders.
"""

from __future__ import annotations

from taxi_assets.partitions import TripMonth
from taxi_assets.sources import SOURCE

# Local files in the making, and leftovers of a killed process, are never under these prefixes.
RAW, STAGING, PUBLISHED, REJECTED, REPORTS = "raw", "staging", "data", "rejected", "reports"


def raw_key(month: TripMonth) -> str:
    return f"{RAW}/{month.color}/{month.file_stem}{SOURCE.suffix}"  # .csv.gz from the releases, .parquet from the TLC


def staging_key(month: TripMonth) -> str:
    return f"{STAGING}/clean_trips/{month.color}/{month.file_stem}.parquet"


def published_key(month: TripMonth) -> str:
    return f"{PUBLISHED}/{month.color}/{month.file_stem}.parquet"


def rejected_key(month: TripMonth) -> str:
    return f"{REJECTED}/{month.color}/{month.file_stem}.csv.gz"


KEY_OF_ASSET = {"raw_trips": raw_key, "clean_trips": staging_key, "gcs_parquet": published_key}
REPORT_KEYS = {"trips_per_month_chart": f"{REPORTS}/trips_per_month.png"}


def key_for(asset_name: str, month: TripMonth | None) -> str:
    """The key where `asset_name` stores `month` (None for the unpartitioned reports); an asset
    the lake does not store is an error."""
    if month is None and asset_name in REPORT_KEYS:
        return REPORT_KEYS[asset_name]
    if month is not None and asset_name in KEY_OF_ASSET:
        return KEY_OF_ASSET[asset_name](month)
    raise ValueError(
        f"the lake stores {sorted(KEY_OF_ASSET)} by partition and {sorted(REPORT_KEYS)}, not {asset_name!r}"
    )
