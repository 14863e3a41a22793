"""Where each stage of a partition lives in the lake (keys relative to the lake root)."""

from taxi_assets.partitions import TripMonth


def raw_key(month: TripMonth) -> str:
    """The upstream file as downloaded, byte for byte."""
    return f"raw/{month.color}/{month.file_stem}.csv.gz"


def published_key(month: TripMonth) -> str:
    """The published Parquet file, in the seed pipeline's layout."""
    return f"data/{month.color}/{month.file_stem}.parquet"
