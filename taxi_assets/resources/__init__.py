"""Target-specific code: the lake (folder or GCS), the warehouse (DuckDB or BigQuery), the upstream source."""
