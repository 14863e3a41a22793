import dagster as dg

from taxi_assets.assets import TRIP_ASSET_NAMES

# Selected by key: the job is the same for either source; its partitions are those of the assets
# it resolves against (`build_defs`).
trips_job = dg.define_asset_job(
    "trips_job",
    selection=dg.AssetSelection.assets(*TRIP_ASSET_NAMES),
    description="One month x color through the whole graph: download, clean, publish, load.",
)
