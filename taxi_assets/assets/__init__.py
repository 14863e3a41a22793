from taxi_assets.assets.trips import clean_trips, gcs_parquet, raw_trips
from taxi_assets.assets.warehouse import bq_rides_table

ALL_ASSETS = [raw_trips, clean_trips, gcs_parquet, bq_rides_table]
