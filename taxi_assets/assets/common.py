"""What the assets share: their group, IO manager, kinds, retry policy and metadata helpers."""

import dagster as dg
import pyarrow as pa

GROUP = "nyc_tlc"
LAKE_IO = "lake_io_manager"

# Kinds follow the target the assets are built for (`build_assets(source, target)`), instead of naming both.
LAKE_KIND = {"local": "file", "gcp": "gcs"}
WAREHOUSE_KIND = {"local": "duckdb", "gcp": "bigquery"}

# A blip of the lake or the warehouse (a 5xx, a lock held a moment too long). Setup errors
# (403, a missing bucket) skip it: see resources/errors.py.
STORAGE_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """An Arrow schema as the `dagster/column_schema` metadata the UI shows."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
            for f in schema
        ]
    )


def markdown_table(table: pa.Table) -> str:
    """A few rows as a Markdown table for the UI (pyarrow's, so no `tabulate` dependency)."""

    def cell(value) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in table.to_pylist()]
    return "\n".join(lines)
