"""The gcp target: the lake in a GCS bucket and `rides` in BigQuery, on dagster-gcp's GCS and
BigQuery resources (extended: a base64 key for GCS too; an emulator endpoint), configured from the
environment. Imported only when TAXI_TARGET=gcp."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_gcp import BigQueryResource, GCSResource
from dagster_gcp.bigquery.utils import setup_gcp_creds
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage
from pydantic import Field, PrivateAttr

from taxi_assets.partitions import COLORS
from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.resources.lake import Lake, LakeObject
from taxi_assets.resources.warehouse import SliceLoad, Warehouse
from taxi_assets.schema import RIDES_SCHEMA, RIDES_TABLE, TRIP_SCHEMAS, rides_select_list

CREDENTIALS_ENV = "GCP_CREDENTIALS"


class TaxiGCSResource(GCSResource):
    """GCSResource that also takes a base64 service-account key, like dagster-gcp's BigQueryResource.
    Without one, Application Default Credentials (or GOOGLE_APPLICATION_CREDENTIALS) apply;
    with STORAGE_EMULATOR_HOST set, the storage client talks to that emulator anonymously."""

    gcp_credentials: str | None = Field(default=None, description="base64-encoded service-account key (optional)")

    def get_client(self) -> storage.Client:
        if self.gcp_credentials:
            with setup_gcp_creds(self.gcp_credentials):
                return super().get_client()
        return super().get_client()


class TaxiBigQueryResource(BigQueryResource):
    """BigQueryResource whose client follows BIGQUERY_EMULATOR_HOST: the stock client has no
    endpoint option, and Google's credential lookup fails against an emulator. Only when that
    variable is set are anonymous credentials used."""

    @contextlib.contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        emulator = os.environ.get("BIGQUERY_EMULATOR_HOST")
        if not emulator:
            with super().get_client() as client:
                yield client
            return
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        yield bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )


def _identity(client) -> str:
    """Who the client acts as, for 403 messages (an email, never a key)."""
    credentials = getattr(client, "_credentials", None)
    return getattr(credentials, "service_account_email", None) or "the Application Default Credentials identity"


class GCSLake(Lake):
    """A GCS bucket: `gs://{bucket}/{key}`. Clients come from dagster-gcp's GCSResource
    (Application Default Credentials; STORAGE_EMULATOR_HOST points it at an emulator)."""

    gcs: GCSResource
    bucket: str
    _client = PrivateAttr(default=None)

    def _bucket(self):
        if self._client is None:
            self._client = self.gcs.get_client()
        return self._client.bucket(self.bucket)

    @contextlib.contextmanager
    def _explained(self, doing: str, needs: str) -> Iterator[None]:
        try:
            yield
        except google_exceptions.Forbidden as exc:
            raise AccessDenied(
                f"GCS refused to {doing} for {_identity(self._client)} (HTTP 403): it needs {needs} on "
                f"gs://{self.bucket} (roles/storage.objectAdmin). Server said: {exc.message}"
            ) from None
        except google_exceptions.NotFound as exc:
            if "bucket" in str(exc.message).lower():
                raise SetupError(
                    f"GCS bucket gs://{self.bucket} does not exist (GCS_BUCKET); create it in the dataset's "
                    f"location, e.g. `gcloud storage buckets create gs://{self.bucket} --location=US`"
                ) from None
            raise

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{key}"

    @contextlib.contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="taxi-lake-") as tmp:
            yield Path(tmp)

    def _describe(self, blob) -> LakeObject:
        crc32c = blob.crc32c and base64.b64decode(blob.crc32c).hex()
        md5 = blob.md5_hash and base64.b64decode(blob.md5_hash).hex()
        return LakeObject(
            key=blob.name,
            uri=self.uri(blob.name),
            size=int(blob.size),
            generation=blob.generation,
            md5=md5 or None,
            crc32c=crc32c or None,
        )

    def publish_file(self, local_path: Path, key: str) -> LakeObject:
        # A GCS object becomes visible only once its upload completes: readers see the old
        # generation or the new one, never a part.
        blob = self._bucket().blob(key)
        with self._explained(f"write {self.uri(key)}", "storage.objects.create and storage.objects.delete"):
            blob.upload_from_filename(str(local_path), checksum="crc32c")
        local_path.unlink(missing_ok=True)
        return self._describe(blob)

    def copy(self, src_key: str, dst_key: str) -> LakeObject:
        bucket = self._bucket()
        source, copied = bucket.blob(src_key), bucket.blob(dst_key)
        with self._explained(
            f"copy {self.uri(src_key)} to {self.uri(dst_key)}", "storage.objects.get and storage.objects.create"
        ):
            # Server-side: the bytes do not pass through the worker. Large objects take several
            # rewrite calls; the destination appears only when the last one completes.
            token, _, _ = copied.rewrite(source)
            while token is not None:
                token, _, _ = copied.rewrite(source, token=token)
        return self._describe(copied)

    def stat(self, key: str) -> LakeObject | None:
        with self._explained(f"read {self.uri(key)}", "storage.objects.get"):
            blob = self._bucket().get_blob(key)
        return self._describe(blob) if blob is not None else None

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with self.scratch_dir() as tmp:
            path = tmp / Path(key).name
            with self._explained(f"read {self.uri(key)}", "storage.objects.get"):
                self._bucket().blob(key).download_to_filename(str(path))
            yield path

    def parquet_metadata(self, key: str) -> pq.FileMetaData:
        with (
            self._explained(f"read {self.uri(key)}", "storage.objects.get"),
            self._bucket().blob(key).open("rb") as reader,
        ):
            return pq.read_metadata(reader)


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

    @contextlib.contextmanager
    def _explain_denied(self, client, doing: str, needs: str):
        try:
            yield
        except google_exceptions.Forbidden as exc:
            raise AccessDenied(
                f"BigQuery refused to {doing} for {_identity(client)} (HTTP 403): it needs {needs}. "
                f"Grant roles/bigquery.dataEditor on dataset {self.dataset} and roles/bigquery.jobUser on the "
                f"project, and roles/storage.objectAdmin on the bucket. Server said: {exc.message}"
            ) from None

    def _ensure_dataset(self, client: bigquery.Client) -> bigquery.Dataset:
        dataset_id = f"{client.project}.{self.dataset}"
        with self._explain_denied(
            client, f"read or create dataset {dataset_id}", "bigquery.datasets.get / bigquery.datasets.create"
        ):
            try:
                return client.get_dataset(dataset_id)
            except google_exceptions.NotFound:
                dataset = bigquery.Dataset(dataset_id)
                dataset.location = self.bigquery.location or "US"
                return client.create_dataset(dataset, exists_ok=True)

    def _preflight(self, client: bigquery.Client, dataset: bigquery.Dataset, bucket_name: str) -> None:
        if bucket_name in self._checked_buckets:
            return
        try:
            bucket = self.gcs.get_client().get_bucket(bucket_name)
        except google_exceptions.NotFound:
            raise SetupError(f"GCS bucket gs://{bucket_name} does not exist (GCS_BUCKET)") from None
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
        with self._explain_denied(client, f"create table {table.table_id}", "bigquery.tables.create"):
            client.create_table(table, exists_ok=True)

    def _swap_statements(
        self, client, staging_id: str, color: str, month: dt.date, fill_passenger_count: bool
    ) -> list[str]:
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

    def _load_staging(self, client: bigquery.Client, source_uri: str, color: str, month: dt.date) -> str:
        """A fresh staging table holding the published file, loaded by BigQuery from GCS."""
        staging_id = self._table_id(client, f"_staging_rides_{color}_{month:%Y%m}_{uuid.uuid4().hex[:8]}")
        staging = bigquery.Table(staging_id, schema=_bq_schema(TRIP_SCHEMAS[color]))
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
        return staging_id

    def replace_slice(self, *, source_uri, color, month, fill_passenger_count) -> SliceLoad:
        if not source_uri.startswith("gs://"):
            raise ValueError(f"BigQuery loads from gs:// objects only, got {source_uri}")
        bucket_name = source_uri.removeprefix("gs://").split("/", 1)[0]
        with self.bigquery.get_client() as client:
            dataset = self._ensure_dataset(client)
            self._preflight(client, dataset, bucket_name)
            self._ensure_rides(client)
            rides = _bq_quote(self._table_id(client, RIDES_TABLE))
            needs = "bigquery.jobs.create, bigquery.tables.updateData and storage.objects.get"
            staging_id = None
            try:
                with self._explain_denied(client, f"load {source_uri} into {rides}", needs):
                    staging_id = self._load_staging(client, source_uri, color, month)
                    swap = self._swap_statements(client, staging_id, color, month, fill_passenger_count)
                    client.query(";\n".join(swap) + ";").result()
                    slice_params = [
                        bigquery.ScalarQueryParameter("color", "STRING", color),
                        bigquery.ScalarQueryParameter("month", "DATE", month),
                    ]
                    loaded = self._scalar(
                        client, f"SELECT COUNT(*) FROM {rides} WHERE color = @color AND month = @month", slice_params
                    )
                    total = self._scalar(client, f"SELECT COUNT(*) FROM {rides}")
            finally:
                if staging_id:
                    client.delete_table(staging_id, not_found_ok=True)
            return SliceLoad(table=self._table_id(client, RIDES_TABLE), rows=loaded, table_rows=total)

    @staticmethod
    def _scalar(client, sql: str, params=()) -> int:
        job_config = bigquery.QueryJobConfig(query_parameters=list(params))
        return next(iter(client.query(sql, job_config=job_config).result()))[0]

    def slice_row_counts(self):
        with self.bigquery.get_client() as client:
            rides = _bq_quote(self._table_id(client, RIDES_TABLE))
            try:
                result = client.query(f"SELECT color, month, COUNT(*) FROM {rides} GROUP BY color, month").result()
            except google_exceptions.NotFound:
                return {}
            return {(row[0], row[1]): row[2] for row in result}


def gcp_lake_and_warehouse() -> tuple[GCSLake, BigQueryWarehouse]:
    """GCS_BUCKET, BQ_DATASET and GCP_PROJECT resolve at launch (EnvVar: never stored or shown
    as values); BQ_LOCATION defaults to US; GCP_CREDENTIALS (base64 key) is optional."""
    project = dg.EnvVar("GCP_PROJECT")
    credentials = dg.EnvVar(CREDENTIALS_ENV) if os.environ.get(CREDENTIALS_ENV) else None
    gcs = TaxiGCSResource(project=project, gcp_credentials=credentials)
    lake = GCSLake(gcs=gcs, bucket=dg.EnvVar("GCS_BUCKET"))
    warehouse = BigQueryWarehouse(
        bigquery=TaxiBigQueryResource(
            project=project, location=os.environ.get("BQ_LOCATION", "US"), gcp_credentials=credentials
        ),
        gcs=gcs,
        dataset=dg.EnvVar("BQ_DATASET"),
    )
    return lake, warehouse
