"""A raw trip file of either source (a DataTalksClub release's CSV.gz, or the TLC's Parquet) -> typed
Parquet with the color's pinned schema.

parse.py          a CSV's header, its blocks (parsed ahead on a second thread), where a parse error is
parquet_input.py  a TLC Parquet file's batches, cast from its era's types to the pinned ones
columns.py        a file's column names (CSV header, Parquet schema) matched to the pinned names
cast.py           a block to the pinned schema
quarantine.py     bad rows set aside, with line and reason, instead of failing the month
stats.py          what the checks and metadata need, counted on the way
convert.py        the loop: read -> cast -> count -> Parquet row groups
prefetch.py       the reusable two-thread hand-off
errors.py         BadTripFile, and the signal to parse a CSV again with integers as floats
"""

from taxi_assets.cleaning.convert import clean_trip_file
from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.cleaning.stats import CleanResult

__all__ = ["BadTripFile", "CleanResult", "clean_trip_file"]
