"""`gcs_parquet` -> `bq_rides_table`: the month's slice of the warehouse table `rides`."""

import dagster as dg
from pydantic import Field

from taxi_assets.assets.clean_trips import not_applicable
from taxi_assets.assets.common import GROUP, STORAGE_RETRY, WAREHOUSE_KIND, column_schema, per_partition
from taxi_assets.io_manager import LakeInput, NoFile
from taxi_assets.partitions import TripMonth
from taxi_assets.progress import Progress
from taxi_assets.resources.errors import failing_fast
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.schema import RIDES_SCHEMA, RIDES_TABLE
from taxi_assets.sources import Source

SLICE_MATCHES_LAKE_FILE = "slice_matches_lake_file"


class RidesLoadConfig(dg.Config):
    """Run config of `bq_rides_table`: how a slice's rows are loaded."""

    fill_passenger_count: bool = Field(
        default=True,
        description="Load NULL passenger_count as 0, as the seed pipeline did (the lake keeps the NULLs)",
    )


RIDES_CHECKS = [
    dg.AssetCheckSpec(
        SLICE_MATCHES_LAKE_FILE, asset="bq_rides_table", description="The slice holds exactly the published file's rows"
    )
]


def build_bq_rides_table(source: Source, target: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`bq_rides_table` on `source`'s grid (its pinned schemas), loading into `target`'s warehouse."""

    @dg.asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={WAREHOUSE_KIND[target], "table"},
        retry_policy=STORAGE_RETRY,
        pool="warehouse",
        check_specs=per_partition(partitions_def, RIDES_CHECKS),
    )
    def bq_rides_table(
        context: dg.AssetExecutionContext, config: RidesLoadConfig, gcs_parquet: LakeInput, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        """The month x color slice of `rides`, the one warehouse table for all colors (unified
        `pickup_datetime` / `dropoff_datetime` names, NULL where a color lacks a column, `month` taken
        from the partition key, not from pickup times). Loaded by the warehouse itself from the
        published lake file; a rerun replaces exactly this slice in one transaction. A cell with no
        upstream file loads nothing, and the warehouse is not touched."""
        if isinstance(gcs_parquet, NoFile):
            return dg.MaterializeResult(
                metadata=gcs_parquet.metadata, check_results=not_applicable(RIDES_CHECKS, gcs_parquet)
            )
        month = TripMonth.from_context(context, source.colors)
        progress = Progress(context.log, "load")
        progress.say(
            f"{gcs_parquet.parquet.num_rows:,} rows from {gcs_parquet.uri} into the {month.color} {month.ym} slice of "
            f"`{RIDES_TABLE}`, read by the warehouse"
        )
        with failing_fast(month):
            load = warehouse.replace_slice(
                source_uri=gcs_parquet.uri,
                color=month.color,
                month=month.month,
                file_schema=source.schemas[month.color],
                fill_passenger_count=config.fill_passenger_count,
            )
        progress.done(f"{load.rows:,} rows in the slice, {load.table_rows:,} in `{load.table}`")
        lake_rows = gcs_parquet.parquet.num_rows
        filled = gcs_parquet.parquet.null_counts.get("passenger_count", 0) if config.fill_passenger_count else 0
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": load.rows,
                "dagster/column_schema": column_schema(RIDES_SCHEMA),
                "table": load.table,
                "source_uri": gcs_parquet.uri,
                "passenger_count_filled_with_0": filled,
                "table_rows_all_slices": load.table_rows,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=SLICE_MATCHES_LAKE_FILE,
                    passed=load.rows == lake_rows,
                    metadata={"slice_rows": load.rows, "lake_file_rows": lake_rows},
                )
            ],
        )

    return bq_rides_table
