import dagster as dg

trips_job = dg.define_asset_job(
    "trips_job",
    selection=dg.AssetSelection.groups("nyc_tlc"),
    description="One month x color through the whole graph: download, clean, publish, load.",
)
