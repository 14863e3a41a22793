"""The warehouse table `rides`, one month x color slice at a time. DuckDB locally, BigQuery on GCP.

Replacing a slice is atomic and idempotent: in one transaction the old slice goes and the new one
comes in, read by the warehouse itself straight from the published lake file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from pydantic import PrivateAttr

from taxi_assets.partitions import COLORS
from taxi_assets.schema import RIDES_SCHEMA, RIDES_TABLE, TRIP_SCHEMAS, rides_select_list


@dataclass(frozen=True)
class SliceLoad:
    table: str
    rows: int
    passenger_count_filled: int
    table_rows: int


class Warehouse(dg.ConfigurableResource):
    """Interface of both warehouses."""

    def replace_slice(
        self, *, source_uri: str, color: str, month: dt.date, fill_passenger_count: bool
    ) -> SliceLoad:
        raise NotImplementedError

    def slice_row_counts(self) -> dict[tuple[str, dt.date], int]:
        """Rows per (color, month) slice, for reports and tests."""
        raise NotImplementedError


_DUCKDB_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.timestamp("us"): "TIMESTAMP",
    pa.date32(): "DATE",
}


def _duck_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBWarehouse(Warehouse):
    """`rides` in a DuckDB file, loaded by DuckDB reading the lake's Parquet file itself."""

    duckdb: DuckDBResource

    def _create_table_sql(self) -> str:
        columns = ", ".join(
            f"{_duck_quote(f.name)} {_DUCKDB_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}"
            for f in RIDES_SCHEMA
        )
        return f"CREATE TABLE IF NOT EXISTS {RIDES_TABLE} ({columns})"

    def replace_slice(self, *, source_uri, color, month, fill_passenger_count) -> SliceLoad:
        if "://" in source_uri:
            raise ValueError(f"DuckDB warehouse loads local lake files only, got {source_uri}")
        select = ", ".join(
            ["$color AS color", "$month AS month"]
            + rides_select_list(
                color, quote=_duck_quote, sql_type=lambda t: _DUCKDB_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        params = {"color": color, "month": month, "path": source_uri}
        count_missing = (
            "SELECT count(*) FROM read_parquet($path) WHERE passenger_count IS NULL"
            if fill_passenger_count and "passenger_count" in TRIP_SCHEMAS[color].names
            else None
        )
        with self.duckdb.get_connection() as conn:
            conn.execute(self._create_table_sql())
            conn.execute("BEGIN TRANSACTION")
            try:
                conn.execute(f"DELETE FROM {RIDES_TABLE} WHERE color = $color AND month = $month", {"color": color, "month": month})
                conn.execute(f"INSERT INTO {RIDES_TABLE} SELECT {select} FROM read_parquet($path)", params)
                loaded = conn.execute(
                    f"SELECT count(*) FROM {RIDES_TABLE} WHERE color = $color AND month = $month",
                    {"color": color, "month": month},
                ).fetchone()[0]
                filled = conn.execute(count_missing, {"path": source_uri}).fetchone()[0] if count_missing else 0
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            total = conn.execute(f"SELECT count(*) FROM {RIDES_TABLE}").fetchone()[0]
        return SliceLoad(table=RIDES_TABLE, rows=loaded, passenger_count_filled=filled, table_rows=total)

    def slice_row_counts(self):
        with self.duckdb.get_connection() as conn:
            conn.execute(self._create_table_sql())
            rows = conn.execute(f"SELECT color, month, count(*) FROM {RIDES_TABLE} GROUP BY ALL ORDER BY ALL").fetchall()
        return {(color, month): n for color, month, n in rows}


_BIGQUERY_TYPES = {
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.string(): "STRING",
    pa.timestamp("us"): "TIMESTAMP",
    pa.date32(): "DATE",
}
_MULTI_REGION_PREFIXES = {"eu": ("europe-",), "us": ("us-",)}


def _bq_quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _bq_schema(schema: pa.Schema) -> list[bigquery.SchemaField]:
    return [
        bigquery.SchemaField(f.name, _BIGQUERY_TYPES[f.type], mode="NULLABLE" if f.nullable else "REQUIRED")
        for f in schema
    ]


def bucket_loadable_into(bucket_location: str, dataset_location: str) -> bool:
    """Whether BigQuery loads from a bucket in `bucket_location` into a dataset in
    `dataset_location`: a US multi-region dataset loads from anywhere; otherwise the bucket must
    be in the dataset's region, or inside the dataset's multi-region."""
    bucket, dataset = bucket_location.lower(), dataset_location.lower()
    if dataset == "us" or bucket == dataset:
        return True
    return bucket.startswith(_MULTI_REGION_PREFIXES.get(dataset, ()))


class WarehouseSetupError(Exception):
    """A problem of configuration or permissions: retrying will not help."""


class WarehouseAccessDenied(WarehouseSetupError):
    pass


class BigQueryWarehouse(Warehouse):
    """`{dataset}.rides` in BigQuery: created on first use (partitioned by month, clustered by
    color); a slice is replaced by a load job from the published `gs://` object into a staging
    table, then one multi-statement transaction that deletes the old slice and inserts the new
    one. A failure anywhere leaves the old slice as it was; readers never see it missing or
    doubled."""

    bigquery: BigQueryResource
    gcs: GCSResource
    dataset: str
    staging_expiry_hours: int = 24
    _checked_buckets: set = PrivateAttr(default_factory=set)

    def _table_id(self, client: bigquery.Client, name: str) -> str:
        return f"{client.project}.{self.dataset}.{name}"

    @staticmethod
    def _identity(client) -> str:
        credentials = getattr(client, "_credentials", None)
        return getattr(credentials, "service_account_email", None) or "the Application Default Credentials identity"

    @contextlib.contextmanager
    def _explain_denied(self, client, doing: str, needs: str):
        try:
            yield
        except google_exceptions.Forbidden as exc:
            raise WarehouseAccessDenied(
                f"BigQuery refused to {doing} for {self._identity(client)} (HTTP 403): it needs {needs}. "
                f"Grant roles/bigquery.dataEditor on dataset {self.dataset} and roles/bigquery.jobUser on the "
                f"project, and roles/storage.objectAdmin on the bucket. Server said: {exc.message}"
            ) from None

    def _ensure_dataset(self, client: bigquery.Client) -> bigquery.Dataset:
        dataset_id = f"{client.project}.{self.dataset}"
        with self._explain_denied(client, f"read or create dataset {dataset_id}", "bigquery.datasets.get / bigquery.datasets.create"):
            try:
                return client.get_dataset(dataset_id)
            except google_exceptions.NotFound:
                dataset = bigquery.Dataset(dataset_id)
                dataset.location = self.bigquery.location or "US"
                return client.create_dataset(dataset, exists_ok=True)

    def _preflight(self, client: bigquery.Client, dataset: bigquery.Dataset, bucket_name: str) -> None:
        if bucket_name in self._checked_buckets:
            return
        bucket = self.gcs.get_client().get_bucket(bucket_name)
        if not bucket_loadable_into(bucket.location, dataset.location):
            raise WarehouseSetupError(
                f"BigQuery cannot load from bucket gs://{bucket_name} (location {bucket.location}) into dataset "
                f"{dataset.dataset_id} (location {dataset.location}): Cannot read and write in different locations. "
                f"Use a dataset in {bucket.location} (set BQ_LOCATION={bucket.location} and a new BQ_DATASET), "
                f"or a bucket in {dataset.location}."
            )
        self._checked_buckets.add(bucket_name)

    def _ensure_rides(self, client: bigquery.Client) -> None:
        table = bigquery.Table(self._table_id(client, RIDES_TABLE), schema=_bq_schema(RIDES_SCHEMA))
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.MONTH, field="month")
        table.clustering_fields = ["color"]
        with self._explain_denied(client, f"create table {table.table_id}", "bigquery.tables.create"):
            client.create_table(table, exists_ok=True)

    def _swap_statements(self, client, staging_id: str, color: str, month: dt.date, fill_passenger_count: bool) -> list[str]:
        # Literals, not parameters: some engines (the emulator) take no parameters in scripts.
        # Both values are validated partition parts: a color of COLORS and a date.
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}")
        slice_filter = f"color = '{color}' AND month = DATE '{month.isoformat()}'"
        rides = _bq_quote(self._table_id(client, RIDES_TABLE))
        columns = ", ".join(_bq_quote(f.name) for f in RIDES_SCHEMA)
        select = ", ".join(
            [f"'{color}'", f"DATE '{month.isoformat()}'"]
            + rides_select_list(
                color, quote=_bq_quote, sql_type=lambda t: _BIGQUERY_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        return [
            "BEGIN TRANSACTION",
            f"DELETE FROM {rides} WHERE {slice_filter}",
            f"INSERT INTO {rides} ({columns}) SELECT {select} FROM {_bq_quote(staging_id)}",
            "COMMIT TRANSACTION",
        ]

    def replace_slice(self, *, source_uri, color, month, fill_passenger_count) -> SliceLoad:
        if not source_uri.startswith("gs://"):
            raise ValueError(f"BigQuery loads from gs:// objects only, got {source_uri}")
        bucket_name = source_uri.removeprefix("gs://").split("/", 1)[0]
        params = [
            bigquery.ScalarQueryParameter("color", "STRING", color),
            bigquery.ScalarQueryParameter("month", "DATE", month),
        ]
        with self.bigquery.get_client() as client:
            dataset = self._ensure_dataset(client)
            self._preflight(client, dataset, bucket_name)
            self._ensure_rides(client)
            staging_id = self._table_id(client, f"_staging_rides_{color}_{month:%Y%m}_{uuid.uuid4().hex[:8]}")
            staging = bigquery.Table(staging_id, schema=_bq_schema(TRIP_SCHEMAS[color]))
            staging.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=self.staging_expiry_hours)
            try:
                with self._explain_denied(client, f"load {source_uri}", "bigquery.jobs.create, bigquery.tables.updateData and storage.objects.get"):
                    client.create_table(staging)
                    load = client.load_table_from_uri(
                        source_uri,
                        staging_id,
                        job_config=bigquery.LoadJobConfig(
                            source_format=bigquery.SourceFormat.PARQUET,
                            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                        ),
                    )
                    load.result()
                    script = ";\n".join(self._swap_statements(client, staging_id, color, month, fill_passenger_count)) + ";"
                    client.query(script).result()
                    loaded = self._scalar(client, f"SELECT COUNT(*) FROM {_bq_quote(self._table_id(client, RIDES_TABLE))} WHERE color = @color AND month = @month", params)
                    filled = (
                        self._scalar(client, f"SELECT COUNTIF(passenger_count IS NULL) FROM {_bq_quote(staging_id)}", [])
                        if fill_passenger_count and "passenger_count" in TRIP_SCHEMAS[color].names
                        else 0
                    )
                    total = self._scalar(client, f"SELECT COUNT(*) FROM {_bq_quote(self._table_id(client, RIDES_TABLE))}", [])
            finally:
                client.delete_table(staging_id, not_found_ok=True)
        return SliceLoad(
            table=self._table_id(client, RIDES_TABLE), rows=loaded, passenger_count_filled=filled, table_rows=total
        )

    @staticmethod
    def _scalar(client, sql: str, params) -> int:
        rows = list(client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params)).result())
        return rows[0][0]

    def slice_row_counts(self):
        with self.bigquery.get_client() as client:
            rides = _bq_quote(self._table_id(client, RIDES_TABLE))
            try:
                result = client.query(f"SELECT color, month, COUNT(*) FROM {rides} GROUP BY color, month").result()
            except google_exceptions.NotFound:
                return {}
            return {(row[0], row[1]): row[2] for row in result}
