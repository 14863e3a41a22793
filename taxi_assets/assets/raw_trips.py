"""upstream release file -> `raw_trips`: the month's file in the lake, byte for byte."""

from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from taxi_assets import layout
from taxi_assets.assets.common import GROUP, LAKE_IO, LAKE_KIND, STORAGE_RETRY
from taxi_assets.io_manager import LakeFile, NewFile, NoFile, stored_file
from taxi_assets.mirror import PUBLIC_BASE_URL, recorded_source
from taxi_assets.partitions import TripMonth
from taxi_assets.progress import Progress, megabytes
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.sources import Source
from taxi_assets.upstream import UpstreamError, redact

FINGERPRINT = "source_fingerprint"
RAW_TRIPS = dg.AssetKey("raw_trips")  # the same key whichever source it is built for


class RawTripsConfig(dg.Config):
    """Run config of `raw_trips`: whether to download a file the lake already holds unchanged."""

    force_download: bool = Field(
        default=False, description="Download even when the lake's raw copy matches the upstream file"
    )


def _unchanged_upstream(
    context: dg.AssetExecutionContext, month: TripMonth, files: UpstreamFiles, stored: LakeFile | None
) -> Mapping[str, dg.MetadataValue] | None:
    """The previous materialization's metadata if the lake's raw copy is still the upstream file
    (same ETag / Last-Modified and size as when it was downloaded), else None."""
    if stored is None:
        return None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return None
    previous = records[0].asset_materialization.metadata
    try:
        current = files.fingerprint(month)
    except UpstreamError:
        return None  # let the download report what is wrong
    if current is None or not (current.etag or current.last_modified):
        return None
    downloaded = previous.get(FINGERPRINT)
    if downloaded is None or downloaded.value != current.token() or stored.size != current.content_length:
        return None
    return previous


def build_raw_trips(source: Source, target: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`raw_trips` for `source`'s grid and file format, its kinds for `target`."""
    colors = source.colors

    @dg.asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python", "csv", LAKE_KIND[target]},
        io_manager_key=LAKE_IO,
        metadata=layout.lake_metadata(
            layout.partition_path("raw", source.suffix), source=source.name
        ),  # .parquet from the TLC
        pool="upstream",  # limits concurrent downloads across runs (deploy/dagster.yaml)
        # A lake blip while storing the file. Not the download: its own retries are bounded inside
        # the step, and its errors fail without a step retry (below).
        retry_policy=STORAGE_RETRY,
    )
    def raw_trips(
        context: dg.AssetExecutionContext,
        config: RawTripsConfig,
        upstream_files: UpstreamFiles,
        workdir: WorkDir,
        lake: Lake,
    ):
        """The month's upstream file (`{color}_tripdata_{YYYY-MM}.csv.gz` from the releases, `.parquet`
        from the TLC), byte for byte, in the lake's raw area. Streamed to disk, verified complete
        (Content-Length, and the gzip end-of-stream marker or the Parquet footer), retried with backoff
        inside the run on transient failures up to a stated bound; a month that is not published fails
        at once without retries. When the upstream file is
        unchanged since the lake's copy was downloaded (ETag / Last-Modified and size), the copy is kept
        and nothing is downloaded. A cell before its color's first file upstream (green before 2014 on
        the TLC) succeeds at once with nothing: 0 rows, and its metadata `no_file` says why."""
        month = TripMonth.from_context(context, colors)
        reason = month.no_file_reason(source)
        if reason is not None:
            return dg.MaterializeResult(value=NoFile(reason), metadata=NoFile(reason).metadata)
        url = upstream_files.url_for(month)
        if not config.force_download:
            stored = stored_file(context, lake)
            previous = _unchanged_upstream(context, month, upstream_files, stored)
            if previous is not None:
                context.log.info(
                    f"download skipped: {redact(url)} unchanged since it was downloaded; keeping the lake's raw copy"
                )
                kept = {k: v for k, v in previous.items() if not k.startswith("download_")}
                return dg.MaterializeResult(
                    value=stored, metadata={**kept, "download_skipped": True, "download_attempts": 0}
                )
        dest = workdir.path(f"{month.file_stem}{source.suffix}")
        progress = Progress(context.log, "download")
        progress.say(f"{redact(url)}")

        def downloading(size: int, announced: int | None) -> None:
            of = f" of {megabytes(announced)} ({size / announced:.0%})" if announced else ""
            progress.update(lambda: f"{megabytes(size)}{of}, {size / 1e6 / max(progress.seconds, 1e-6):,.1f} MB/s")

        try:
            with failing_fast(month), writing(dest):
                got = upstream_files.fetch(month, dest, log=context.log, on_progress=downloading)
        except UpstreamError as exc:
            # Transfer errors were retried inside the fetch up to its bound; a run retry would repeat it.
            raise dg.Failure(description=f"partition {month}: {exc}", allow_retries=False) from exc
        attempts = f", {got.attempts} attempts" if got.attempts > 1 else ""
        progress.done(f"{megabytes(got.size)} at {got.size / 1e6 / max(got.seconds, 1e-6):,.1f} MB/s{attempts}")
        public_url = source.url(PUBLIC_BASE_URL[source.name], month.color, month.ym)
        origin = recorded_source(upstream_files.base, redact(url), public_url)
        server = got.fingerprint
        return dg.MaterializeResult(
            value=NewFile(got.path),
            metadata={
                "source_url": dg.MetadataValue.url(origin.pop("source_url")),
                **origin,  # "served_from": the bundled sample, when it was
                "sha256": got.sha256,
                # What the server said of its version; a header it did not send is left out.
                **({"source_etag": server.etag} if server.etag else {}),
                **({"source_last_modified": server.last_modified} if server.last_modified else {}),
                # ETag|Last-Modified|size as the sensor compares them ("None" where a header was not sent).
                FINGERPRINT: server.token(),
                "download_skipped": False,
                "download_attempts": got.attempts,
                "download_seconds": round(got.seconds, 2),
                "download_mb_per_s": round(got.size / 1e6 / max(got.seconds, 1e-6), 1),
            },
        )

    return raw_trips
