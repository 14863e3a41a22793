"""The graph, one module per asset, in the data's direction:
upstream -> raw_trips -> clean_trips -> gcs_parquet -> bq_rides_table."""

from taxi_assets.assets.bq_rides_table import bq_rides_table
from taxi_assets.assets.clean_trips import clean_trips
from taxi_assets.assets.gcs_parquet import gcs_parquet
from taxi_assets.assets.raw_trips import raw_trips

ALL_ASSETS = [raw_trips, clean_trips, gcs_parquet, bq_rides_table]
