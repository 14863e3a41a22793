"""What the assets share: their group, IO manager, kinds, retry policy and metadata helpers."""

import re
import warnings

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


def per_partition(partitions_def: dg.PartitionsDefinition, specs: list[dg.AssetCheckSpec]) -> list[dg.AssetCheckSpec]:
    """The checks of a partitioned asset as partitioned checks: each result records the partition it
    checked, and the UI lists results per partition (without, its checks tab says "Partition -").
    Dagster 1.13 supports them as a preview; its PreviewWarning is silenced here, where we chose it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                spec.name,
                asset=spec.asset_key,
                description=spec.description,
                blocking=spec.blocking,
                metadata=spec.metadata,
                partitions_def=partitions_def,
            )
            for spec in specs
        ]


def shown_table_name(sql_name: str) -> str:
    """A table's name as users type it: `"monthly_trip_stats"` (DuckDB's quoting) reads
    monthly_trip_stats, `` `project.dataset.table` `` reads project.dataset.table."""
    return sql_name.replace('"', "").replace("`", "")


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """An Arrow schema as the `dagster/column_schema` metadata the UI shows."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
            for f in schema
        ]
    )


# What a cell could use to make the viewer's browser fetch something or follow a link (an image,
# a link, HTML, a bare URL or address that GFM links by itself) or to break the table: each is
# shown as the character it is. Digits, "-" and "." are left alone, so dates and numbers read as
# they are (a "www." gets its dot escaped).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~:@])")
_WWW = re.compile(r"(?i)\b(www)\.")


def markdown_text(value: object, limit: int = 100) -> str:
    """Upstream text for a Markdown cell: escaped, on one line, cut at `limit` characters."""
    text = " ".join(str(value).split())
    text = text if len(text) <= limit else text[:limit] + "..."
    return _WWW.sub(r"\1\\.", _MARKDOWN_SPECIAL.sub(r"\\\1", text))


def markdown_table(table: pa.Table) -> str:
    """A few rows as a Markdown table for the UI (pyarrow's, so no `tabulate` dependency). Values
    come from upstream files: each is escaped, so an image or a link in a cell is inert."""

    def cell(value) -> str:
        return "" if value is None else markdown_text(value)

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in table.to_pylist()]
    return "\n".join(lines)
