"""The gcp target: the lake in a GCS bucket, `rides` in BigQuery. Imported only when TAXI_TARGET=gcp."""
