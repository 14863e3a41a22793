"""The warehouse side of the graph: the published lake file -> its slice of the `rides` table."""

import dagster as dg
import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets.assets.common import GROUP, STORAGE_RETRY, column_schema, fail_fast_on_setup_errors
from taxi_assets.assets.trips import gcs_parquet
from taxi_assets.layout import published_key
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.schema import RIDES_SCHEMA


class RidesLoadConfig(dg.Config):
    fill_passenger_count: bool = Field(
        default=True,
        description="Load NULL passenger_count as 0, as the seed pipeline did (the lake keeps the NULLs)",
    )


def _null_count(footer: pq.FileMetaData, column: str) -> int:
    """NULLs in a column, from the Parquet footer's statistics: no data is read."""
    index = footer.schema.names.index(column)
    return sum(footer.row_group(i).column(index).statistics.null_count for i in range(footer.num_row_groups))


@dg.asset(
    partitions_def=trip_partitions,
    group_name=GROUP,
    kinds={"bigquery", "duckdb", "table"},
    deps=[gcs_parquet],
    retry_policy=STORAGE_RETRY,
    pool="warehouse",
    check_specs=[
        dg.AssetCheckSpec(
            "slice_matches_lake_file",
            asset="bq_rides_table",
            description="The slice holds exactly the published file's rows",
        )
    ],
)
def bq_rides_table(context: dg.AssetExecutionContext, config: RidesLoadConfig, lake: Lake, warehouse: Warehouse):
    """The month x color slice of `rides`, the one warehouse table for all colors (unified
    `pickup_datetime` / `dropoff_datetime` names, NULL where a color lacks a column, `month` taken
    from the partition key, not from pickup times). Loaded by the warehouse itself from the
    published lake file; a rerun replaces exactly this slice in one transaction."""
    month = TripMonth.from_context(context)
    key = published_key(month)
    with fail_fast_on_setup_errors(month):
        if lake.stat(key) is None:
            raise dg.Failure(
                description=f"partition {month}: published file {lake.uri(key)} missing; materialize gcs_parquet first",
                allow_retries=False,
            )
        footer = lake.parquet_metadata(key)
        load = warehouse.replace_slice(
            source_uri=lake.uri(key),
            color=month.color,
            month=month.month,
            fill_passenger_count=config.fill_passenger_count,
        )
    filled = (
        _null_count(footer, "passenger_count")
        if config.fill_passenger_count and "passenger_count" in footer.schema.names
        else 0
    )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": load.rows,
            "dagster/column_schema": column_schema(RIDES_SCHEMA),
            "table": load.table,
            "source_uri": lake.uri(key),
            "passenger_count_filled_with_0": filled,
            "table_rows_all_slices": load.table_rows,
        }
    )
    yield dg.AssetCheckResult(
        check_name="slice_matches_lake_file",
        passed=load.rows == footer.num_rows,
        metadata={"slice_rows": load.rows, "lake_file_rows": footer.num_rows},
    )
