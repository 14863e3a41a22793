"""`{dataset}.rides` in BigQuery, loaded by BigQuery itself from the published `gs://` object."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import uuid
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from pydantic import PrivateAttr

from taxi_assets.resources.errors import SetupError
from taxi_assets.resources.gcp.clients import explained, missing_bucket
from taxi_assets.resources.warehouse import SliceLoad, Warehouse
from taxi_assets.retrying import retry
from taxi_assets.schema import RIDES_SCHEMA, RIDES_TABLE, rides_select_list
from taxi_assets.sources import ALL_COLORS

_BIGQUERY_TYPES = {
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.string(): "STRING",
    pa.timestamp("us"): "TIMESTAMP",
    pa.date32(): "DATE",
}
_MULTI_REGION_PREFIXES = {"eu": ("europe-",), "us": ("us-",)}
# What BigQuery says when it aborts a transaction for another one on the same table.
_CONCURRENT_UPDATE = re.compile(r"concurrent update|could not serialize access", re.IGNORECASE)


_PARAMETER_TYPES = ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (str, "STRING"))


def _parameter(name: str, value: object) -> bigquery.ScalarQueryParameter:
    """A named query parameter, typed from the Python value (a datetime before a date: it is one)."""
    if isinstance(value, dt.datetime):
        kind = "TIMESTAMP" if value.tzinfo else "DATETIME"
    elif isinstance(value, dt.date):
        kind = "DATE"
    else:
        kind = next((t for cls, t in _PARAMETER_TYPES if isinstance(value, cls)), None)
        if kind is None:
            raise TypeError(f"query parameter {name}: no BigQuery type for {type(value).__name__}")
    return bigquery.ScalarQueryParameter(name, kind, value)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _bq_schema(schema: pa.Schema, timestamps: str = "TIMESTAMP") -> list[bigquery.SchemaField]:
    def bq_type(dtype: pa.DataType) -> str:
        return timestamps if dtype == pa.timestamp("us") else _BIGQUERY_TYPES[dtype]

    return [
        bigquery.SchemaField(f.name, bq_type(f.type), mode="NULLABLE" if f.nullable else "REQUIRED") for f in schema
    ]


def bucket_loadable_into(bucket_location: str, dataset_location: str) -> bool:
    """Whether BigQuery loads from a bucket in `bucket_location` into a dataset in
    `dataset_location`: a US multi-region dataset loads from anywhere; otherwise the bucket must
    be in the dataset's region, or inside the dataset's multi-region."""
    bucket, dataset = bucket_location.lower(), dataset_location.lower()
    if dataset == "us" or bucket == dataset:
        return True
    return bucket.startswith(_MULTI_REGION_PREFIXES.get(dataset, ()))


class BigQueryWarehouse(Warehouse):
    """`rides` is created on first use (partitioned by month, clustered by color). A slice is replaced
    by a load job from the published `gs://` object into a staging table, then one multi-statement
    transaction that deletes the old slice and inserts the new one. A failure anywhere leaves the
    old slice as it was; readers never see it missing or doubled."""

    bigquery: BigQueryResource
    gcs: GCSResource
    dialect: ClassVar[str] = "bigquery"
    dataset: str
    staging_expiry_hours: int = 24
    # BigQuery aborts a transaction that mutates a table another transaction is mutating. The
    # `warehouse` pool serializes swaps within one instance; two instances (or CLI runs) can still
    # meet, and then the aborted swap is run again after a pause.
    swap_attempts: int = 5
    swap_backoff_seconds: float = 2.0
    _checked_buckets: set = PrivateAttr(default_factory=set)

    def _table_id(self, client: bigquery.Client, name: str) -> str:
        return f"{client.project}.{self.dataset}.{name}"

    def _explained(self, client, doing: str, needs: str) -> contextlib.AbstractContextManager:
        grant = (
            f"roles/bigquery.dataEditor on dataset {self.dataset} and roles/bigquery.jobUser on the project, "
            "and roles/storage.objectAdmin on the bucket"
        )
        return explained(client, service="BigQuery", doing=doing, needs=needs, grant=grant)

    def _ensure_dataset(self, client: bigquery.Client) -> bigquery.Dataset:
        dataset_id = f"{client.project}.{self.dataset}"
        with self._explained(
            client, f"read or create dataset {dataset_id}", "bigquery.datasets.get / bigquery.datasets.create"
        ):
            try:
                return client.get_dataset(dataset_id)
            except google_exceptions.NotFound:
                dataset = bigquery.Dataset(dataset_id)
                dataset.location = client.location
                return client.create_dataset(dataset, exists_ok=True)

    def _preflight(self, dataset: bigquery.Dataset, bucket_name: str) -> None:
        """Fail at once, naming both locations, instead of a load job's "Cannot read and write in
        different locations"."""
        if bucket_name in self._checked_buckets:
            return
        try:
            bucket = self.gcs.get_client().get_bucket(bucket_name)
        except google_exceptions.NotFound:
            raise missing_bucket(bucket_name) from None
        except google_exceptions.Forbidden:
            # Reading a bucket's location needs storage.buckets.get, which roles/storage.objectAdmin
            # lacks: without it, the load job itself reports a location mismatch.
            dg.get_dagster_logger().warning(
                f"cannot read the location of gs://{bucket_name} (storage.buckets.get); skipping the location check"
            )
            self._checked_buckets.add(bucket_name)
            return
        if not bucket_loadable_into(bucket.location, dataset.location):
            raise SetupError(
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
        with self._explained(client, f"create table {table.table_id}", "bigquery.tables.create"):
            client.create_table(table, exists_ok=True)

    def swap_script(self, client, staging_id: str, color: str, month: dt.date, fill_passenger_count: bool) -> str:
        """The transaction that replaces the slice with the staging table's rows."""
        # Literals, not parameters: some engines (the emulator) take no parameters in scripts.
        # Both values are validated partition parts: a color of a source and a date.
        if color not in ALL_COLORS:
            raise ValueError(f"unknown color {color!r}")
        slice_filter = f"color = '{color}' AND month = DATE '{month.isoformat()}'"
        rides = _quote(self._table_id(client, RIDES_TABLE))
        columns = ", ".join(_quote(f.name) for f in RIDES_SCHEMA)
        select = ", ".join(
            [f"'{color}'", f"DATE '{month.isoformat()}'"]
            + rides_select_list(
                color, quote=_quote, sql_type=lambda t: _BIGQUERY_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        return (
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM {rides} WHERE {slice_filter};\n"
            f"INSERT INTO {rides} ({columns}) SELECT {select} FROM {_quote(staging_id)};\n"
            "COMMIT TRANSACTION;"
        )

    def _load_staging(self, client: bigquery.Client, staging_id: str, source_uri: str, schema: pa.Schema) -> None:
        """A fresh staging table holding the published file, loaded by BigQuery from GCS."""
        # DATETIME: the lake's timestamps are timezone-naive (New York wall-clock times), and that is
        # what BigQuery reads them as; the swap casts them to rides' TIMESTAMP.
        staging = bigquery.Table(staging_id, schema=_bq_schema(schema, timestamps="DATETIME"))
        # Dropped after the swap; the expiry only collects what a killed worker left behind.
        staging.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=self.staging_expiry_hours)
        client.create_table(staging)
        client.load_table_from_uri(
            source_uri,
            staging_id,
            job_config=bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            ),
        ).result()

    def replace_slice(self, *, source_uri, color, month, file_schema, fill_passenger_count) -> SliceLoad:
        if not source_uri.startswith("gs://"):
            raise ValueError(f"BigQuery loads from gs:// objects only, got {source_uri}")
        bucket_name = source_uri.removeprefix("gs://").split("/", 1)[0]
        with self.bigquery.get_client() as client:
            dataset = self._ensure_dataset(client)
            self._preflight(dataset, bucket_name)
            self._ensure_rides(client)
            rides = _quote(self._table_id(client, RIDES_TABLE))
            needs = "bigquery.jobs.create, bigquery.tables.updateData and storage.objects.get"
            # Named before it is created, so that a failed load job drops it too.
            staging_id = self._table_id(client, f"_staging_rides_{color}_{month:%Y%m}_{uuid.uuid4().hex[:8]}")
            try:
                with self._explained(client, f"load {source_uri} into {rides}", needs):
                    self._load_staging(client, staging_id, source_uri, file_schema)
                    self._swap(client, self.swap_script(client, staging_id, color, month, fill_passenger_count))
                    loaded = self._scalar(
                        client,
                        f"SELECT COUNT(*) FROM {rides} WHERE color = @color AND month = @month",
                        self._slice_params(color, month),
                    )
                    total = self._scalar(client, f"SELECT COUNT(*) FROM {rides}")
            finally:
                client.delete_table(staging_id, not_found_ok=True)
            return SliceLoad(table=self._table_id(client, RIDES_TABLE), rows=loaded, table_rows=total)

    def _swap(self, client: bigquery.Client, script: str) -> None:
        retry(
            lambda: client.query(script).result(),
            retry_on=lambda exc: (
                isinstance(exc, google_exceptions.GoogleAPICallError) and bool(_CONCURRENT_UPDATE.search(str(exc)))
            ),
            attempts=self.swap_attempts,
            first_pause=self.swap_backoff_seconds,
            jitter=0.5,  # two swaps that collided do not run again in step
            on_retry=lambda attempt, exc, pause, _: dg.get_dagster_logger().warning(
                f"slice swap aborted by a concurrent transaction on rides (attempt {attempt} of "
                f"{self.swap_attempts}); retrying in {pause:.1f} s: {exc.message}"
            ),
        )

    @staticmethod
    def _scalar(client, sql: str, params=()) -> int:
        job_config = bigquery.QueryJobConfig(query_parameters=list(params))
        return next(iter(client.query(sql, job_config=job_config).result()))[0]

    def slice_rows(self, color, month) -> int:
        with self.bigquery.get_client() as client:
            rides = _quote(self._table_id(client, RIDES_TABLE))
            try:
                sql = f"SELECT COUNT(*) FROM {rides} WHERE color = @color AND month = @month"
                return self._scalar(client, sql, self._slice_params(color, month))
            except google_exceptions.NotFound:
                return 0

    def replace_table(self, name: str, table: pa.Table) -> int:
        # One load job with WRITE_TRUNCATE: BigQuery swaps the table's contents atomically when the
        # job succeeds, and leaves them as they were when it fails.
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        buffer.seek(0)
        with self.bigquery.get_client() as client:
            self._ensure_dataset(client)
            table_id = self._table_id(client, name)
            with self._explained(client, f"replace {table_id}", "bigquery.jobs.create, bigquery.tables.updateData"):
                client.load_table_from_file(
                    buffer,
                    table_id,
                    job_config=bigquery.LoadJobConfig(
                        source_format=bigquery.SourceFormat.PARQUET,
                        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                        schema=_bq_schema(table.schema),
                    ),
                ).result()
                return self._scalar(client, f"SELECT COUNT(*) FROM {_quote(table_id)}")

    def table_name(self, name: str) -> str:
        project = self.bigquery.project
        if project is None:  # Application Default Credentials name it
            with self.bigquery.get_client() as client:
                project = client.project
        return _quote(f"{project}.{self.dataset}.{name}")

    def has_table(self, name: str) -> bool:
        with self.bigquery.get_client() as client:
            try:
                client.get_table(self._table_id(client, name))
                return True
            except google_exceptions.NotFound:
                return False

    def query(self, sql, params=None):
        job_config = bigquery.QueryJobConfig(
            query_parameters=[_parameter(name, value) for name, value in (params or {}).items()]
        )
        with self.bigquery.get_client() as client:
            return client.query(sql, job_config=job_config).result().to_dataframe(create_bqstorage_client=False)

    @staticmethod
    def _slice_params(color: str, month: dt.date) -> list:
        params = [
            bigquery.ScalarQueryParameter("color", "STRING", color),
            bigquery.ScalarQueryParameter("month", "DATE", month),
        ]
        return params

    def slice_row_counts(self):
        with self.bigquery.get_client() as client:
            rides = _quote(self._table_id(client, RIDES_TABLE))
            try:
                result = client.query(f"SELECT color, month, COUNT(*) FROM {rides} GROUP BY color, month").result()
            except google_exceptions.NotFound:
                return {}
            return {(row[0], row[1]): row[2] for row in result}
