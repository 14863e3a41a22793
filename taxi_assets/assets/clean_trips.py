"""`raw_trips` -> `clean_trips`: the month as typed Parquet with the color's pinned schema, checked."""

from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets import layout
from taxi_assets.assets.common import (
    GROUP,
    LAKE_IO,
    LAKE_KIND,
    STORAGE_RETRY,
    column_schema,
    markdown_table,
    per_partition,
)
from taxi_assets.cleaning import BadTripFile, CleanResult, clean_trip_file
from taxi_assets.io_manager import LakeInput, NewFile, NoFile
from taxi_assets.partitions import TripMonth
from taxi_assets.progress import Progress, megabytes
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.schema import DROPOFF_COLUMN, PICKUP_COLUMN
from taxi_assets.sources import Source

HAS_ROWS = "has_rows"
MATCHES_PINNED_SCHEMA = "matches_pinned_schema"
NO_ROWS_REJECTED = "no_rows_rejected"
PICKUPS_WITHIN_MONTH = "pickups_within_month"
DROPOFF_NOT_BEFORE_PICKUP = "dropoff_not_before_pickup"


class CleanTripsConfig(dg.Config):
    """Run config of `clean_trips`: what to do with rows that cannot be parsed."""

    on_bad_rows: Literal["fail", "quarantine"] = Field(
        default="fail",
        description="fail: one unparseable row fails the month. quarantine: such rows are set aside, whole, with "
        "their line numbers and reasons, in the lake's rejected/ area, and the good rows go on",
    )
    max_rejected_fraction: float = Field(
        default=0.001, description="quarantine: above this share of rejected rows the check fails as an ERROR"
    )


CLEAN_CHECKS = [
    dg.AssetCheckSpec(HAS_ROWS, asset="clean_trips", blocking=True, description="At least one trip"),
    dg.AssetCheckSpec(
        MATCHES_PINNED_SCHEMA,
        asset="clean_trips",
        blocking=True,
        description="The Parquet schema is exactly the color's pinned schema",
    ),
    dg.AssetCheckSpec(
        NO_ROWS_REJECTED,
        asset="clean_trips",
        blocking=True,
        description="No row was set aside (quarantine): a warning, an error above max_rejected_fraction",
    ),
    dg.AssetCheckSpec(
        PICKUPS_WITHIN_MONTH,
        asset="clean_trips",
        description="Pickups fall in the partition's month (the real files have some that do not)",
    ),
    dg.AssetCheckSpec(DROPOFF_NOT_BEFORE_PICKUP, asset="clean_trips", description="dropoff >= pickup"),
]


def not_applicable(specs: list[dg.AssetCheckSpec], cell: NoFile) -> list[dg.AssetCheckResult]:
    """The checks of a cell that holds no file: nothing to check, said so (a check result is due for
    each spec, and a failed blocking one would fail the run)."""
    return [
        dg.AssetCheckResult(check_name=s.name, passed=True, metadata={"not_applicable": cell.reason}) for s in specs
    ]


# The preview's columns, where the color has them: what a trip is, in a table that fits the page.
PREVIEW_COLUMNS = (
    "passenger_count",
    "trip_distance",
    "store_and_fwd_flag",  # upstream text: shown inert (markdown_text), like every cell
    "pulocationid",
    "dolocationid",
    "fare_amount",
    "tip_amount",
    "total_amount",
    "dispatching_base_num",
)


def preview_table(preview: pa.Table, color: str) -> str:
    """The first rows, as Markdown: pickup and dropoff times and the columns above, amounts and
    distances to two decimals."""
    wanted = {PICKUP_COLUMN[color].lower(), DROPOFF_COLUMN[color].lower(), *PREVIEW_COLUMNS}
    columns = [name for name in preview.column_names if name.lower() in wanted]
    cells = {}
    for name in columns:
        values = preview.column(name).to_pylist()
        if pa.types.is_floating(preview.schema.field(name).type):
            values = [None if v is None else f"{v:.2f}" for v in values]
        cells[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return markdown_table(pa.table(cells)) if cells else ""


def _pickup_range(result: CleanResult) -> dict[str, str]:
    """The earliest and latest pickups; left out when the file has no rows."""
    if result.min_pickup is None:
        return {}
    return {"min_pickup": str(result.min_pickup), "max_pickup": str(result.max_pickup)}


def _metadata(result: CleanResult, pinned: pa.Schema, raw_downloaded: bool, color: str) -> dict[str, object]:
    return {
        "dagster/row_count": result.rows,
        "dagster/column_schema": column_schema(pinned),
        "preview": dg.MetadataValue.md(preview_table(result.preview, color) if result.preview is not None else ""),
        "null_counts": dg.MetadataValue.json({k: v for k, v in result.null_counts.items() if v}),
        "pickups_outside_month": result.pickups_outside_month,
        "dropoffs_before_pickup": result.dropoffs_before_pickup,
        **_pickup_range(result),
        "parse_seconds": round(result.seconds, 2),
        "raw_file_downloaded": raw_downloaded,
    }


def _checks(
    result: CleanResult, written: pa.Schema, pinned: pa.Schema, config: CleanTripsConfig
) -> list[dg.AssetCheckResult]:
    schema_ok = written.equals(pinned, check_metadata=False)
    source_lines = result.rows + result.rows_rejected
    rejected_share = result.rows_rejected / source_lines if source_lines else 0.0
    too_many = rejected_share > config.max_rejected_fraction
    return [
        dg.AssetCheckResult(check_name=HAS_ROWS, passed=result.rows > 0, metadata={"rows": result.rows}),
        dg.AssetCheckResult(
            check_name=MATCHES_PINNED_SCHEMA,
            passed=schema_ok,
            metadata={} if schema_ok else {"written": str(written), "pinned": str(pinned)},
        ),
        dg.AssetCheckResult(
            check_name=NO_ROWS_REJECTED,
            passed=result.rows_rejected == 0,
            severity=dg.AssetCheckSeverity.ERROR if too_many else dg.AssetCheckSeverity.WARN,
            metadata={
                "rows_rejected": result.rows_rejected,
                "source_lines": source_lines,
                "rejected_percent": round(100 * rejected_share, 3),
                "max_rejected_percent": round(100 * config.max_rejected_fraction, 3),
            },
        ),
        dg.AssetCheckResult(
            check_name=PICKUPS_WITHIN_MONTH,
            passed=result.pickups_outside_month == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"pickups_outside_month": result.pickups_outside_month, **_pickup_range(result)},
        ),
        dg.AssetCheckResult(
            check_name=DROPOFF_NOT_BEFORE_PICKUP,
            passed=result.dropoffs_before_pickup == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"dropoffs_before_pickup": result.dropoffs_before_pickup},
        ),
    ]


def build_clean_trips(source: Source, target: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`clean_trips` on `source`'s grid, parsing with its pinned schemas, with the kinds of `target`'s lake."""

    @dg.asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"pyarrow", "parquet", LAKE_KIND[target]},
        io_manager_key=LAKE_IO,
        metadata=layout.lake_metadata(
            layout.partition_path("staging/clean_trips", ".parquet"),
            source=source.name,
            rejected=layout.partition_path("rejected", ".csv.gz"),  # the quarantined lines, if any
        ),
        check_specs=per_partition(partitions_def, CLEAN_CHECKS),
        retry_policy=STORAGE_RETRY,  # a lake blip while reading the raw file or storing the Parquet
    )
    def clean_trips(
        context: dg.AssetExecutionContext, config: CleanTripsConfig, raw_trips: LakeInput, workdir: WorkDir
    ):
        """The month parsed with the color's pinned Arrow schema (the same types every month:
        timestamps, nullable integers, floats for money and distance, strings for flags) and written as
        Parquet, streamed in bounded memory. A wrong header or an unparseable value fails with the
        partition, the file, the column and the line; or, with `on_bad_rows: quarantine`, unparseable
        rows are set aside in the lake's rejected/ area and counted by a check. Stored in the lake's staging area: only
        gcs_parquet publishes it, after the blocking checks pass. A cell with no upstream file holds nothing."""
        if isinstance(raw_trips, NoFile):
            return dg.MaterializeResult(
                value=raw_trips, metadata=raw_trips.metadata, check_results=not_applicable(CLEAN_CHECKS, raw_trips)
            )
        month = TripMonth.from_context(context, source.colors)
        if not 0 <= config.max_rejected_fraction <= 1:  # NaN too: it would let any share of bad rows publish
            raise dg.Failure(
                description=f"partition {month}: config max_rejected_fraction must be a share from 0 to 1, "
                f"got {config.max_rejected_fraction}",
                allow_retries=False,
            )
        pinned = source.schemas[month.color]
        label = f"partition {month}, file {raw_trips.uri}"
        out = workdir.path(f"{month.file_stem}.parquet")
        rejected = workdir.path(f"{month.file_stem}.rejected.csv.gz") if config.on_bad_rows == "quarantine" else None
        raw_downloaded = raw_trips.downloads
        progress = Progress(context.log, "parse")
        progress.say(f"{raw_trips.uri} ({megabytes(raw_trips.size)}) with the {month.color} pinned schema")

        def parsing(rows: int, rejected_rows: int) -> None:
            progress.update(lambda: f"{rows:,} rows parsed, {rejected_rows:,} rejected")

        with failing_fast(month), raw_trips.local_copy() as raw_path, writing(out):
            try:
                result = clean_trip_file(
                    raw_path,
                    out,
                    color=month.color,
                    schema=pinned,
                    month_start=month.month,
                    month_end=month.next_month,
                    file_label=label,
                    rejected_path=rejected,
                    on_progress=parsing,
                )
            except BadTripFile as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
        progress.done(
            f"{result.rows:,} rows parsed, {result.rows_rejected:,} rejected, "
            f"{megabytes(out.stat().st_size)} of Parquet ({result.rows / max(progress.seconds, 1e-6):,.0f} rows/s)"
        )
        if rejected is not None and raw_trips.key.endswith(".parquet"):
            context.log.warning(
                "on_bad_rows: quarantine applies to CSV files; a Parquet file's values are typed already"
            )
        if result.rows_rejected:
            context.log.warning(f"{label}: {result.rows_rejected} rows set aside (quarantine)")
        return dg.MaterializeResult(
            value=NewFile(out, side_files={"rejected": rejected if result.rows_rejected else None}),
            metadata={**_metadata(result, pinned, raw_downloaded, month.color), "rows_rejected": result.rows_rejected},
            check_results=_checks(result, pq.read_schema(out), pinned, config),
        )

    return clean_trips
