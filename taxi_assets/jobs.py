import dagster as dg

from taxi_assets.partitions import trip_partitions

trips_job = dg.define_asset_job(
    "trips_job",
    selection=dg.AssetSelection.groups("nyc_tlc"),
    partitions_def=trip_partitions,
    description="One month x color through the whole graph: download, clean, publish, load.",
)
