"""The graph, one module per asset, in the data's direction:
upstream -> raw_trips -> clean_trips -> gcs_parquet -> bq_rides_table, then analytics.py:
taxi/zones, monthly_trip_stats -> trips_per_month_chart.

The assets are built for one source and one target by `build_assets`: the source fixes the
partition grid, the raw file's suffix and the pinned schemas; the target fixes the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from taxi_assets.assets.analytics import build_monthly_trip_stats, build_taxi_zones, trips_per_month_chart
from taxi_assets.assets.bq_rides_table import build_bq_rides_table
from taxi_assets.assets.clean_trips import build_clean_trips
from taxi_assets.assets.gcs_parquet import build_gcs_parquet
from taxi_assets.assets.raw_trips import build_raw_trips
from taxi_assets.partitions import trip_partitions
from taxi_assets.sources import Source

TRIP_ASSET_NAMES = ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table")


@dataclass(frozen=True)
class GraphAssets:
    """The assets of one source and target. `trips` is one month x color through the trip graph."""

    partitions_def: dg.PartitionsDefinition
    raw_trips: dg.AssetsDefinition
    clean_trips: dg.AssetsDefinition
    gcs_parquet: dg.AssetsDefinition
    bq_rides_table: dg.AssetsDefinition
    taxi_zones: dg.AssetsDefinition
    monthly_trip_stats: dg.AssetsDefinition
    trips_per_month_chart: dg.AssetsDefinition

    @property
    def trips(self) -> list[dg.AssetsDefinition]:
        """The four trip assets, in the data's direction: one month x color through the trip graph."""
        return [self.raw_trips, self.clean_trips, self.gcs_parquet, self.bq_rides_table]

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        """Every asset of the code location: the trip assets, then the analytics."""
        return [*self.trips, self.taxi_zones, self.monthly_trip_stats, self.trips_per_month_chart]


def build_assets(source: Source, target: str) -> GraphAssets:
    """The assets of the code location serving `source` on `target`, on one shared partitions definition."""
    # One partitions definition for every partitioned asset: they are one grid.
    partitions_def = trip_partitions(source)
    return GraphAssets(
        partitions_def=partitions_def,
        raw_trips=build_raw_trips(source, target, partitions_def),
        clean_trips=build_clean_trips(source, target, partitions_def),
        gcs_parquet=build_gcs_parquet(source, target, partitions_def),
        bq_rides_table=build_bq_rides_table(source, target, partitions_def),
        taxi_zones=build_taxi_zones(target),
        monthly_trip_stats=build_monthly_trip_stats(source, target, partitions_def),
        trips_per_month_chart=trips_per_month_chart,
    )


__all__ = ["TRIP_ASSET_NAMES", "GraphAssets", "build_assets"]
