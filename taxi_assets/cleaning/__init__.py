"""Raw release CSV -> typed Parquet with the color's pinned schema.

parse.py     the header, CSV blocks (parsed ahead on a second thread), where a parse error is
cast.py      a block to the pinned schema
stats.py     what the checks and metadata need, counted on the way
convert.py   the loop: parse -> cast -> count -> Parquet row groups
prefetch.py  the reusable two-thread hand-off
"""

from taxi_assets.cleaning.convert import clean_trip_file
from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.cleaning.stats import CleanResult

__all__ = ["BadTripFile", "CleanResult", "clean_trip_file"]
