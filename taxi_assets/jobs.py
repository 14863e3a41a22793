import dagster as dg

from taxi_assets.assets import TRIP_ASSETS

trips_job = dg.define_asset_job(
    "trips_job",
    selection=dg.AssetSelection.assets(*TRIP_ASSETS),
    description="One month x color through the whole graph: download, clean, publish, load.",
)
