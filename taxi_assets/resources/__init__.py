"""The resources: the lake (folder or GCS), the warehouse (DuckDB or BigQuery), the upstream files (`UpstreamFiles`)."""
