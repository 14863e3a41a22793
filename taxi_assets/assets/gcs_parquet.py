"""`clean_trips` -> `gcs_parquet`: the checked month, published in the seed's layout."""

import dagster as dg

from taxi_assets import layout
from taxi_assets.assets.common import GROUP, LAKE_IO, LAKE_KIND, STORAGE_RETRY
from taxi_assets.io_manager import LakeInput, NoFile, PublishCopy
from taxi_assets.progress import Progress, megabytes
from taxi_assets.sources import Source


def build_gcs_parquet(source: Source, target: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """`gcs_parquet` on `source`'s grid: the published copy in `target`'s lake, after the blocking checks."""

    @dg.asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"parquet", LAKE_KIND[target]},
        io_manager_key=LAKE_IO,
        metadata=layout.lake_metadata(layout.partition_path("data", ".parquet"), source=source.name),
        retry_policy=STORAGE_RETRY,
    )
    def gcs_parquet(context: dg.AssetExecutionContext, clean_trips: LakeInput):
        """The month published in the lake at `data/{color}/{color}_tripdata_{YYYY-MM}.parquet` (the
        seed's layout), only after clean_trips passed its blocking checks. The object is replaced
        atomically by the storage itself (a hard link and a rename locally, a server-side copy on GCS):
        readers see the old file or the new one, never a part, and the bytes never pass through here.
        A cell with no upstream file publishes nothing."""
        if isinstance(clean_trips, NoFile):
            return dg.MaterializeResult(value=clean_trips, metadata=clean_trips.metadata)
        Progress(context.log, "publish").say(
            f"{clean_trips.parquet.num_rows:,} rows ({megabytes(clean_trips.size)}) from {clean_trips.uri}, "
            "copied by the lake"
        )
        return dg.MaterializeResult(
            value=PublishCopy(clean_trips), metadata={"dagster/row_count": clean_trips.parquet.num_rows}
        )

    return gcs_parquet
