"""The graph, one module per asset, in the data's direction:
upstream -> raw_trips -> clean_trips -> gcs_parquet -> bq_rides_table, then analytics.py:
taxi/zones, monthly_trip_stats -> trips_per_month_chart."""

from taxi_assets.assets.analytics import monthly_trip_stats, taxi_zones, trips_per_month_chart
from taxi_assets.assets.bq_rides_table import bq_rides_table
from taxi_assets.assets.clean_trips import clean_trips
from taxi_assets.assets.gcs_parquet import gcs_parquet
from taxi_assets.assets.raw_trips import raw_trips

TRIP_ASSETS = [raw_trips, clean_trips, gcs_parquet, bq_rides_table]
ALL_ASSETS = [*TRIP_ASSETS, taxi_zones, monthly_trip_stats, trips_per_month_chart]
__all__ = [
    "ALL_ASSETS",
    "TRIP_ASSETS",
    "bq_rides_table",
    "clean_trips",
    "gcs_parquet",
    "monthly_trip_stats",
    "raw_trips",
    "taxi_zones",
    "trips_per_month_chart",
]
