"""`raw_trips` -> `clean_trips`: the month as typed Parquet with the color's pinned schema, checked."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.assets.common import GROUP, LAKE_IO, LAKE_KIND, column_schema
from taxi_assets.cleaning import BadTripFile, CleanResult, clean_trip_file
from taxi_assets.io_manager import LakeFile, NewFile
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.schema import TRIP_SCHEMAS

HAS_ROWS = "has_rows"
MATCHES_PINNED_SCHEMA = "matches_pinned_schema"
PICKUPS_WITHIN_MONTH = "pickups_within_month"
DROPOFF_NOT_BEFORE_PICKUP = "dropoff_not_before_pickup"

CLEAN_CHECKS = [
    dg.AssetCheckSpec(HAS_ROWS, asset="clean_trips", blocking=True, description="At least one trip"),
    dg.AssetCheckSpec(
        MATCHES_PINNED_SCHEMA,
        asset="clean_trips",
        blocking=True,
        description="The Parquet schema is exactly the color's pinned schema",
    ),
    dg.AssetCheckSpec(
        PICKUPS_WITHIN_MONTH,
        asset="clean_trips",
        description="Pickups fall in the partition's month (the real files have some that do not)",
    ),
    dg.AssetCheckSpec(DROPOFF_NOT_BEFORE_PICKUP, asset="clean_trips", description="dropoff >= pickup"),
]


def _markdown_table(table: pa.Table) -> str:
    """A few rows as a Markdown table for the UI (without pulling in pandas for it)."""

    def cell(value) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in table.to_pylist()]
    return "\n".join(lines)


def _metadata(result: CleanResult, color: str, raw_downloaded: bool) -> dict[str, object]:
    return {
        "dagster/row_count": result.rows,
        "dagster/column_schema": column_schema(TRIP_SCHEMAS[color]),
        "preview": dg.MetadataValue.md(_markdown_table(result.preview) if result.preview is not None else ""),
        "null_counts": dg.MetadataValue.json({k: v for k, v in result.null_counts.items() if v}),
        "pickups_outside_month": result.pickups_outside_month,
        "dropoffs_before_pickup": result.dropoffs_before_pickup,
        "min_pickup": str(result.min_pickup),
        "max_pickup": str(result.max_pickup),
        "parse_seconds": round(result.seconds, 3),
        "raw_file_downloaded": raw_downloaded,
    }


def _checks(result: CleanResult, written: pa.Schema, pinned: pa.Schema) -> list[dg.AssetCheckResult]:
    schema_ok = written.equals(pinned, check_metadata=False)
    return [
        dg.AssetCheckResult(check_name=HAS_ROWS, passed=result.rows > 0, metadata={"rows": result.rows}),
        dg.AssetCheckResult(
            check_name=MATCHES_PINNED_SCHEMA,
            passed=schema_ok,
            metadata={} if schema_ok else {"written": str(written), "pinned": str(pinned)},
        ),
        dg.AssetCheckResult(
            check_name=PICKUPS_WITHIN_MONTH,
            passed=result.pickups_outside_month == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "pickups_outside_month": result.pickups_outside_month,
                "min_pickup": str(result.min_pickup),
                "max_pickup": str(result.max_pickup),
            },
        ),
        dg.AssetCheckResult(
            check_name=DROPOFF_NOT_BEFORE_PICKUP,
            passed=result.dropoffs_before_pickup == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"dropoffs_before_pickup": result.dropoffs_before_pickup},
        ),
    ]


@dg.asset(
    partitions_def=trip_partitions,
    group_name=GROUP,
    kinds={"pyarrow", "parquet", LAKE_KIND},
    io_manager_key=LAKE_IO,
    check_specs=CLEAN_CHECKS,
)
def clean_trips(context: dg.AssetExecutionContext, raw_trips: LakeFile, workdir: WorkDir):
    """The month parsed with the color's pinned Arrow schema (the same types every month:
    timestamps, nullable integers, floats for money and distance, strings for flags) and written as
    Parquet, streamed in bounded memory. A wrong header or an unparseable value fails with the
    partition, the file, the column and the line. Stored in the lake's staging area: only
    gcs_parquet publishes it, after the blocking checks pass."""
    month = TripMonth.from_context(context)
    label = f"partition {month}, file {raw_trips.uri}"
    out = workdir.path(f"{month.file_stem}.parquet")
    raw_downloaded = raw_trips.downloads
    with failing_fast(month), raw_trips.local_copy() as raw_path, writing(out):
        try:
            result = clean_trip_file(
                raw_path, out, color=month.color, month_start=month.month, month_end=month.next_month, file_label=label
            )
        except BadTripFile as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
    pinned = TRIP_SCHEMAS[month.color]
    return dg.MaterializeResult(
        value=NewFile(out),
        metadata=_metadata(result, month.color, raw_downloaded),
        check_results=_checks(result, pq.read_schema(out), pinned),
    )
