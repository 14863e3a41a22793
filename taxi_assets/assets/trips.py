"""The lake side of the graph: upstream file -> raw lake file -> typed Parquet -> published Parquet."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from pydantic import Field

from taxi_assets.assets.common import (
    GROUP,
    STORAGE_RETRY,
    UPSTREAM_RETRY,
    column_schema,
    fail_fast_on_setup_errors,
)
from taxi_assets.cleaning import BadTripFile, CleanResult, clean_trip_file
from taxi_assets.io_managers import LakeParquet, ParquetFile
from taxi_assets.layout import published_key, raw_key
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.source import TripSource
from taxi_assets.schema import TRIP_SCHEMAS
from taxi_assets.upstream import NotPublished, UpstreamError


class RawTripsConfig(dg.Config):
    force_download: bool = Field(
        default=False, description="Download even when the lake's raw copy matches the upstream file"
    )


def _unchanged_upstream(
    context: dg.AssetExecutionContext, month: TripMonth, source: TripSource, lake: Lake
) -> dict[str, dg.MetadataValue] | None:
    """The previous materialization's metadata if the lake's raw copy is still the upstream file
    (same ETag / Last-Modified and size as when it was downloaded), else None."""
    stored = lake.stat(raw_key(month))
    if stored is None:
        return None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return None
    previous = records[0].asset_materialization.metadata
    try:
        current = source.fingerprint(month)
    except requests.RequestException:
        return None  # let the download report what is wrong
    if current is None or not (current.etag or current.last_modified):
        return None
    downloaded = previous.get("source_fingerprint")
    if downloaded is None or downloaded.value != current.token() or stored.size != current.content_length:
        return None
    return previous


@dg.asset(
    partitions_def=trip_partitions,
    group_name=GROUP,
    kinds={"python", "csv"},
    retry_policy=UPSTREAM_RETRY,
)
def raw_trips(
    context: dg.AssetExecutionContext, config: RawTripsConfig, source: TripSource, lake: Lake
) -> dg.MaterializeResult:
    """The month's upstream release file (`{color}_tripdata_{YYYY-MM}.csv.gz`), byte for byte, in
    the lake's raw area. Streamed to disk, verified complete (Content-Length and the gzip
    end-of-stream marker), retried on transient failures; a month that is not published fails at
    once without retries. When the upstream file is unchanged since the lake's copy was
    downloaded (ETag / Last-Modified and size), the copy is kept and nothing is downloaded."""
    month = TripMonth.from_context(context)
    url = source.url_for(month)
    if not config.force_download:
        with fail_fast_on_setup_errors(month):
            previous = _unchanged_upstream(context, month, source, lake)
        if previous is not None:
            context.log.info(f"{url} unchanged since it was downloaded; keeping the lake's raw copy")
            kept = {k: v for k, v in previous.items() if not k.startswith("download_")}
            return dg.MaterializeResult(metadata={**kept, "download_skipped": True, "download_attempts": 0})
    with lake.scratch_dir() as tmp:
        try:
            got = source.fetch(month, tmp / f"{month.file_stem}.csv.gz", log=context.log)
        except NotPublished as exc:
            raise dg.Failure(description=f"partition {month}: {exc}", allow_retries=False) from exc
        except UpstreamError as exc:
            raise dg.Failure(description=f"partition {month}: {exc}") from exc
        with fail_fast_on_setup_errors(month):
            stored = lake.publish_file(got.path, raw_key(month))
    return dg.MaterializeResult(
        metadata={
            "source_url": dg.MetadataValue.url(url),
            "sha256": got.sha256,
            "source_etag": str(got.fingerprint.etag),
            "source_last_modified": str(got.fingerprint.last_modified),
            "source_fingerprint": got.fingerprint.token(),
            "download_skipped": False,
            "download_attempts": got.attempts,
            "download_seconds": round(got.seconds, 3),
            "download_mb_per_s": round(got.size / 1e6 / max(got.seconds, 1e-6), 1),
            **stored.metadata(),
        }
    )


CLEAN_CHECKS = [
    dg.AssetCheckSpec("has_rows", asset="clean_trips", blocking=True, description="At least one trip"),
    dg.AssetCheckSpec(
        "matches_pinned_schema",
        asset="clean_trips",
        blocking=True,
        description="The Parquet schema is exactly the color's pinned schema",
    ),
    dg.AssetCheckSpec(
        "pickups_within_month",
        asset="clean_trips",
        description="Pickups fall in the partition's month (the real files have some that do not)",
    ),
    dg.AssetCheckSpec("dropoff_not_before_pickup", asset="clean_trips", description="dropoff >= pickup"),
]


def _markdown_table(table: pa.Table) -> str:
    """A few rows as a Markdown table for the UI (without pulling in pandas for it)."""

    def cell(value) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in table.to_pylist()]
    return "\n".join(lines)


def _clean_metadata(result: CleanResult, color: str) -> dict[str, dg.MetadataValue | int | float | str]:
    schema = TRIP_SCHEMAS[color]
    preview = _markdown_table(result.preview) if result.preview is not None else ""
    return {
        "dagster/row_count": result.rows,
        "dagster/column_schema": column_schema(schema),
        "preview": dg.MetadataValue.md(preview),
        "null_counts": dg.MetadataValue.json({k: v for k, v in result.null_counts.items() if v}),
        "pickups_outside_month": result.pickups_outside_month,
        "dropoffs_before_pickup": result.dropoffs_before_pickup,
        "min_pickup": str(result.min_pickup),
        "max_pickup": str(result.max_pickup),
        "parquet_bytes": result.parquet_bytes,
        "parse_seconds": round(result.seconds, 3),
    }


@dg.asset(
    partitions_def=trip_partitions,
    group_name=GROUP,
    kinds={"pyarrow", "parquet"},
    deps=[raw_trips],
    io_manager_key="lake_io_manager",
    check_specs=CLEAN_CHECKS,
)
def clean_trips(context: dg.AssetExecutionContext, lake: Lake):
    """The month parsed with the color's pinned Arrow schema (the same types every month:
    timestamps, nullable integers, floats for money and distance, strings for flags) and written as
    Parquet, streamed in bounded memory. A wrong header or an unparseable value fails with the
    partition, the file, the column and the line."""
    month = TripMonth.from_context(context)
    source_key = raw_key(month)
    label = f"partition {month}, file {lake.uri(source_key)}"
    with fail_fast_on_setup_errors(month):
        if lake.stat(source_key) is None:
            raise dg.Failure(description=f"{label}: raw file missing; materialize raw_trips first", allow_retries=False)
        with lake.local_file(source_key) as raw_path, lake.scratch_dir() as tmp:
            out = tmp / f"{month.file_stem}.parquet"
            try:
                result = clean_trip_file(
                    raw_path,
                    out,
                    color=month.color,
                    month_start=month.month,
                    month_end=month.next_month,
                    file_label=label,
                )
            except BadTripFile as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            written_schema = pq.read_schema(out)
            yield dg.Output(ParquetFile(out), metadata=_clean_metadata(result, month.color))

    pinned = TRIP_SCHEMAS[month.color]
    yield dg.AssetCheckResult(check_name="has_rows", passed=result.rows > 0, metadata={"rows": result.rows})
    yield dg.AssetCheckResult(
        check_name="matches_pinned_schema",
        passed=written_schema.equals(pinned, check_metadata=False),
        metadata={"written": str(written_schema), "pinned": str(pinned)} if not written_schema.equals(pinned) else {},
    )
    yield dg.AssetCheckResult(
        check_name="pickups_within_month",
        passed=result.pickups_outside_month == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "pickups_outside_month": result.pickups_outside_month,
            "min_pickup": str(result.min_pickup),
            "max_pickup": str(result.max_pickup),
        },
    )
    yield dg.AssetCheckResult(
        check_name="dropoff_not_before_pickup",
        passed=result.dropoffs_before_pickup == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dropoffs_before_pickup": result.dropoffs_before_pickup},
    )


@dg.asset(
    partitions_def=trip_partitions,
    group_name=GROUP,
    kinds={"gcs", "parquet"},
    retry_policy=STORAGE_RETRY,
)
def gcs_parquet(context: dg.AssetExecutionContext, clean_trips: LakeParquet, lake: Lake) -> dg.MaterializeResult:
    """The month published in the lake at `data/{color}/{color}_tripdata_{YYYY-MM}.parquet` (the
    seed's layout), only after clean_trips passed its blocking checks. The object is replaced
    atomically (a rename locally, a server-side copy on GCS): readers see the old file or the
    new one, never a part."""
    month = TripMonth.from_context(context)
    with fail_fast_on_setup_errors(month):
        stored = lake.copy(clean_trips.key, published_key(month))
    return dg.MaterializeResult(metadata={"dagster/row_count": clean_trips.num_rows, **stored.metadata()})
