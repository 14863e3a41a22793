"""taxi_assets: NYC TLC trip files as month x color partitioned Dagster assets."""
