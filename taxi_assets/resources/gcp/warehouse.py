"""`{dataset}.rides` in BigQuery, loaded by BigQuery itself from the published `gs://` object."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import ClassVar, TypeVar

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from pydantic import PrivateAttr

from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.resources.gcp.clients import (
    Bounds,
    Unavailable,
    call_retry,
    explained,
    is_transient,
    location_not_found,
    missing_bucket,
    reason,
    said,
    unavailable,
)
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
# Regions that BigQuery's "Locations" page lists inside the EU multi-region (EU member states:
# not London europe-west2 or Zurich europe-west6). Only used to say "loads" for sure; a European
# region not listed here (the list grows: europe-north2) is not refused, only warned about.
_EU_REGIONS = frozenset(
    {
        "europe-central2",
        "europe-north1",
        "europe-southwest1",
        "europe-west1",
        "europe-west3",
        "europe-west4",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
    }
)
# A region's name: europe-west1, us-central1, northamerica-northeast2. Multi-regions (US, EU,
# ASIA, which configurable dual-regions also report) and predefined dual-regions (NAM4, EUR4,
# ASIA1) have none of its shape.
_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
# The multi-regions' continents: their regions' (and their configurable dual-regions') names begin so.
_CONTINENT = {"us": "us-", "eu": "europe-", "asia": "asia-"}
# What BigQuery says when it aborts a transaction for another one on the same table.
_CONCURRENT_UPDATE = re.compile(r"concurrent update|could not serialize access", re.IGNORECASE)


T = TypeVar("T")

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


def bucket_loadable_into(bucket_location: str, dataset_location: str) -> bool | None:
    """Whether BigQuery loads from a bucket in `bucket_location` into a dataset in
    `dataset_location`, where the rule is certain; None where it is not. The rule (BigQuery's
    "Loading Parquet data from Cloud Storage", Limitations): a dataset in the US multi-region loads
    from anywhere; otherwise the bucket must be in the dataset's region, or contained in its
    multi-region.
    - True: the same location; a US dataset; a listed EU region into EU.
    - False: two different regions; a multi-region (or a configurable dual-region, which reports
      its multi-region) into a region of another continent, or into EU a bucket outside Europe.
    - None: everything else: US, EU or ASIA into a region of theirs (a configurable dual-region may
      hold it), a predefined dual-region (NAM4, EUR4, ASIA1), a European region not listed."""
    bucket, dataset = bucket_location.lower(), dataset_location.lower()
    if bucket == dataset or dataset == "us":
        return True
    if _REGION.match(bucket) and _REGION.match(dataset):
        return False
    if _REGION.match(dataset) and bucket in _CONTINENT:
        return None if dataset.startswith(_CONTINENT[bucket]) else False
    if dataset == "eu":
        if bucket in _EU_REGIONS:
            return True
        if bucket in _CONTINENT or _REGION.match(bucket):
            return None if bucket.startswith("europe-") else False
    return None


class BigQueryWarehouse(Warehouse):
    """`rides` is created on first use (partitioned by month, clustered by color). A slice is replaced
    by a load job from the published `gs://` object into a staging table, then one multi-statement
    transaction that deletes the old slice and inserts the new one. A failure anywhere leaves the
    old slice as it was; readers never see it missing or doubled.

    Every Google call goes through `_call` (classified errors, failed jobs run again) with the
    library's retry bounded (`Bounds`); every job is waited for at most `job_timeout_seconds`."""

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
    # One API call: the client library retries a 429, a 5xx or a rateLimitExceeded with backoff
    # from `first_pause_seconds`, starting no new request after `call_deadline_seconds` (BigQuery's
    # default is 600 s a call, and 2,400 s of query restarts: 120 s here, since Dagster's step retry
    # comes on top), each request cut at `request_timeout_seconds` (the library sets none).
    call_deadline_seconds: float = 120.0
    request_timeout_seconds: float = 60.0
    first_pause_seconds: float = 1.0
    # A job that ran and failed on BigQuery's side (backendError, rateLimitExceeded in its
    # errorResult), which no library retry repeats for load jobs: started again, as a new job, after
    # a pause doubling from `transient_backoff_seconds`, up to `transient_attempts` jobs.
    transient_attempts: int = 3
    transient_backoff_seconds: float = 4.0
    # How long a job may run: the biggest month (fhvhv, 20M rows) loads and swaps in minutes; a job
    # still running after this is cancelled and the step fails as retryable.
    job_timeout_seconds: float = 1800.0
    _checked_buckets: set = PrivateAttr(default_factory=set)

    def _table_id(self, client: bigquery.Client, name: str) -> str:
        return f"{client.project}.{self.dataset}.{name}"

    def _grant(self) -> str:
        return (
            f"roles/bigquery.dataEditor on dataset {self.dataset} and roles/bigquery.jobUser on the project, "
            "and roles/storage.objectAdmin on the bucket"
        )

    def _bounds(self) -> Bounds:
        return Bounds(self.call_deadline_seconds, self.request_timeout_seconds, self.first_pause_seconds)

    def _limits(self, doing: str, service: str = "BigQuery") -> dict:
        """The `retry=` and `timeout=` of one API call."""
        return {
            "retry": call_retry(self._bounds(), service=service, doing=doing),
            "timeout": self.request_timeout_seconds,
        }

    @contextlib.contextmanager
    def _explained(self, client, doing: str, needs: str, grant: str | None = None) -> Iterator[None]:
        """`explained` (permissions, billing, quotas, outages), and a job that did not find the
        dataset in its location."""
        try:
            with explained(
                client,
                service="BigQuery",
                doing=doing,
                needs=needs,
                grant=grant or self._grant(),
                bounds=self._bounds(),
            ):
                yield
        except google_exceptions.NotFound as exc:
            job_location = location_not_found(exc)
            if job_location is None:
                raise
            raise SetupError(self._elsewhere(client, job_location, exc.message)) from None

    def _elsewhere(self, client: bigquery.Client, job_location: str, said: str) -> str:
        dataset_id = f"{client.project}.{self.dataset}"
        try:
            actual = f"is in {client.get_dataset(dataset_id, **self._limits('read the dataset')).location}"
        except google_exceptions.GoogleAPIError:
            actual = "is not there"
        return (
            f"BigQuery ran the job in location {job_location} (BQ_LOCATION), but dataset {dataset_id} {actual}: "
            f"set BQ_LOCATION to the dataset's location, or BQ_DATASET to a dataset in {job_location}. "
            f"Server said: {said}"
        )

    def _call(self, client, doing: str, needs: str, fn: Callable[[], T], grant: str | None = None) -> T:
        """One BigQuery operation: its errors classified (`_explained`); a job that failed on
        BigQuery's side with a transient error started again (`transient_attempts`). An API call
        whose library retry ran out (a RetryError) is not repeated here: its bound is spent."""

        def give_up(attempt: int, exc: BaseException, elapsed: float) -> Unavailable:
            bound = f"{attempt} jobs over {elapsed:.0f} s (transient_attempts)"
            return unavailable(exc, service="BigQuery", doing=doing, bound=bound)

        with self._explained(client, doing, needs, grant):
            return retry(
                fn,
                retry_on=lambda exc: is_transient(exc) and not isinstance(exc, google_exceptions.RetryError),
                attempts=self.transient_attempts,
                first_pause=self.transient_backoff_seconds,
                max_pause=60.0,
                jitter=0.5,  # failed jobs of parallel runs do not start again together
                on_retry=lambda attempt, exc, pause, _: dg.get_dagster_logger().warning(
                    f"BigQuery job failed on its side ({reason(exc)}, job {attempt} of {self.transient_attempts}) "
                    f"while trying to {doing}; starting it again in {pause:.1f} s: {said(exc)[:300]}"
                ),
                on_give_up=give_up,
                chain=False,  # the message carries the server's
            )

    def _wait(self, client: bigquery.Client, job, doing: str):
        """Wait for a job to finish (polling jobs.get, each call bounded), at most
        `job_timeout_seconds`; its error, if it failed, is raised by `result`."""
        deadline = time.monotonic() + self.job_timeout_seconds
        pause = 0.2
        while not job.done(**self._limits(doing)):
            if time.monotonic() + pause > deadline:
                with contextlib.suppress(google_exceptions.GoogleAPIError):
                    client.cancel_job(job.job_id, location=job.location, **self._limits(f"cancel job {job.job_id}"))
                raise Unavailable(
                    f"BigQuery job {job.job_id} (to {doing}) did not finish within {self.job_timeout_seconds:g} s "
                    "(job_timeout_seconds) and was cancelled; the step is run again later by its retry policy"
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
        return job

    def _query(self, client: bigquery.Client, sql: str, params=(), doing: str = "run a query"):
        """One query job, waited for; its rows. No library job retry (`job_retry=None`): a failed
        job is started again by `_call`, whose bound is stated. jobs.insert itself is retried by
        the client with the job id it made, and a 409 after a lost response fetches that job."""
        job_config = bigquery.QueryJobConfig(query_parameters=list(params))
        job = client.query(sql, job_config=job_config, job_retry=None, **self._limits(doing))
        self._wait(client, job, doing)
        return job.result(job_retry=None, **self._limits(doing))

    def _load(self, client: bigquery.Client, doing: str, start: Callable[[str], bigquery.LoadJob]) -> None:
        """One load job under a job id of ours: when jobs.insert is retried after a lost response
        and answered 409 (the first insert made the job), that job is fetched and waited for, not
        started twice. `start(job_id)` starts it."""
        job_id = f"taxi_load_{uuid.uuid4().hex}"
        try:
            job = start(job_id)
        except google_exceptions.Conflict:
            dg.get_dagster_logger().info(f"load job {job_id} exists already (a retried insert): waiting for it")
            job = client.get_job(job_id, location=client.location, **self._limits(doing))
        self._wait(client, job, doing)
        job.result(**self._limits(doing))  # raises the job's error, if it failed

    def _ensure_dataset(self, client: bigquery.Client) -> bigquery.Dataset:
        dataset_id = f"{client.project}.{self.dataset}"
        doing = f"read dataset {dataset_id}"

        def get() -> bigquery.Dataset | None:
            try:
                return client.get_dataset(dataset_id, **self._limits(doing))
            except google_exceptions.NotFound:
                return None

        dataset = self._call(client, doing, "bigquery.datasets.get", get)
        if dataset is not None:
            if dataset.location.lower() != client.location.lower():
                # Its jobs would run in BQ_LOCATION and not find it ("Dataset ... was not found in location").
                raise SetupError(
                    f"dataset {dataset_id} is in location {dataset.location}, but BQ_LOCATION is {client.location}: "
                    f"set BQ_LOCATION={dataset.location}, or BQ_DATASET to a new dataset (created in "
                    f"{client.location})"
                )
            return dataset
        created = bigquery.Dataset(dataset_id)
        created.location = client.location
        doing = f"create dataset {dataset_id} in {client.location}"
        return self._call(
            client,
            doing,
            "bigquery.datasets.create on the project",
            # Keyed by its id: a create retried after a lost response finds it (exists_ok).
            lambda: client.create_dataset(created, exists_ok=True, **self._limits(doing)),
            grant=f"roles/bigquery.dataEditor on the project, or create the dataset once yourself "
            f"(`bq --location={client.location} mk --dataset {dataset_id.replace('.', ':', 1)}`) and grant "
            f"{self._grant()}",
        )

    def _preflight(self, dataset: bigquery.Dataset, bucket_name: str) -> None:
        """Fail at once, naming both locations, when the bucket's and the dataset's locations are
        certainly incompatible (`bucket_loadable_into`); warn when it cannot tell, and let the load
        job's own error ("Cannot read and write in different locations") speak."""
        if bucket_name in self._checked_buckets:
            return
        doing = f"read the location of gs://{bucket_name}"
        client = self.gcs.get_client()
        try:
            with explained(
                client,
                service="GCS",
                doing=doing,
                needs="storage.buckets.get",
                grant="roles/storage.legacyBucketReader on the bucket",
                bounds=self._bounds(),
            ):
                bucket = client.get_bucket(bucket_name, **self._limits(doing, service="GCS"))
        except google_exceptions.NotFound:
            raise missing_bucket(bucket_name) from None
        except AccessDenied:
            # Reading a bucket's location needs storage.buckets.get, which roles/storage.objectAdmin
            # lacks: without it, the load job itself reports a location mismatch.
            dg.get_dagster_logger().warning(
                f"cannot read the location of gs://{bucket_name} (storage.buckets.get); skipping the location check"
            )
            self._checked_buckets.add(bucket_name)
            return
        loadable = bucket_loadable_into(bucket.location, dataset.location)
        if loadable is False:
            raise SetupError(
                f"BigQuery cannot load from bucket gs://{bucket_name} (location {bucket.location}) into dataset "
                f"{dataset.dataset_id} (location {dataset.location}): Cannot read and write in different locations. "
                f"Use a dataset in {bucket.location} (set BQ_LOCATION={bucket.location} and a new BQ_DATASET), "
                f"or a bucket in {dataset.location}."
            )
        if loadable is None:
            dg.get_dagster_logger().warning(
                f"bucket gs://{bucket_name} is in {bucket.location} and dataset {dataset.dataset_id} in "
                f"{dataset.location}: whether BigQuery loads across these is not certain here (a dual-region, or a "
                "region this check does not list); loading, and a mismatch is reported by the load job itself"
            )
        self._checked_buckets.add(bucket_name)

    def _ensure_rides(self, client: bigquery.Client) -> None:
        table = bigquery.Table(self._table_id(client, RIDES_TABLE), schema=_bq_schema(RIDES_SCHEMA))
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.MONTH, field="month")
        table.clustering_fields = ["color"]
        doing = f"create table {table.table_id}"
        self._call(
            client,
            doing,
            "bigquery.tables.create",
            lambda: client.create_table(table, exists_ok=True, **self._limits(doing)),
        )

    def swap_script(self, client, staging_id: str, color: str, fill_passenger_count: bool) -> str:
        """The transaction that replaces the slice (@color, @month: query parameters, `_slice_params`)
        with the staging table's rows."""
        rides = _quote(self._table_id(client, RIDES_TABLE))
        columns = ", ".join(_quote(f.name) for f in RIDES_SCHEMA)
        select = ", ".join(
            ["@color", "@month"]
            + rides_select_list(
                color, quote=_quote, sql_type=lambda t: _BIGQUERY_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        return (
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM {rides} WHERE color = @color AND month = @month;\n"
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
        doing = f"load {source_uri} into {staging_id}"
        client.create_table(staging, exists_ok=True, **self._limits(doing))  # a retried load finds it
        job_config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            # WRITE_TRUNCATE replaces the pre-created schema with the Parquet file's (timestamps
            # as DATETIME, the same columns): harmless, since the swap casts every column to
            # rides' types. WRITE_TRUNCATE_DATA (google-cloud-bigquery 3.47 has it) would keep
            # the schema; not used because bqemulator does not know it.
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        self._load(
            client,
            doing,
            lambda job_id: client.load_table_from_uri(
                source_uri, staging_id, job_id=job_id, job_config=job_config, **self._limits(doing)
            ),
        )

    def replace_slice(self, *, source_uri, color, month, file_schema, fill_passenger_count) -> SliceLoad:
        """Load the gs:// Parquet file into staging, then swap it in as the color x month slice of `rides` at once."""
        if not source_uri.startswith("gs://"):
            raise ValueError(f"BigQuery loads from gs:// objects only, got {source_uri}")
        if color not in ALL_COLORS:
            raise ValueError(f"unknown color {color!r}")
        bucket_name = source_uri.removeprefix("gs://").split("/", 1)[0]
        with self.bigquery.get_client() as client:
            dataset = self._ensure_dataset(client)
            self._preflight(dataset, bucket_name)
            self._ensure_rides(client)
            rides = _quote(self._table_id(client, RIDES_TABLE))
            needs = "bigquery.jobs.create, bigquery.tables.updateData and storage.objects.get"
            # Named before it is created, so that a failed load job drops it too.
            staging_id = self._table_id(client, f"_staging_rides_{color}_{month:%Y%m}_{uuid.uuid4().hex[:8]}")
            params = self._slice_params(color, month)
            try:
                doing = f"load {source_uri} into {rides}"
                self._call(
                    client, doing, needs, lambda: self._load_staging(client, staging_id, source_uri, file_schema)
                )
                script = self.swap_script(client, staging_id, color, fill_passenger_count)
                self._call(client, doing, needs, lambda: self._transaction(client, script, params, RIDES_TABLE))
                count = f"SELECT COUNT(*) FROM {rides} WHERE color = @color AND month = @month"
                loaded = self._call(
                    client,
                    f"count {rides}",
                    "bigquery.jobs.create, bigquery.tables.getData",
                    lambda: self._scalar(client, count, params),
                )
                total = self._call(
                    client,
                    f"count {rides}",
                    "bigquery.jobs.create, bigquery.tables.getData",
                    lambda: self._scalar(client, f"SELECT COUNT(*) FROM {rides}"),
                )
            finally:
                self._drop(client, staging_id)
            return SliceLoad(table=self._table_id(client, RIDES_TABLE), rows=loaded, table_rows=total)

    def _drop(self, client: bigquery.Client, table_id: str) -> None:
        """Drop a staging table; when BigQuery refuses, say so and go on (it expires anyway): the
        error that matters is the one that ended the load, if any."""
        try:
            client.delete_table(table_id, not_found_ok=True, **self._limits(f"drop {table_id}"))
        except google_exceptions.GoogleAPIError as exc:
            dg.get_dagster_logger().warning(
                f"could not drop staging table {table_id} ({reason(exc) or type(exc).__name__}); it expires in "
                f"{self.staging_expiry_hours} h"
            )

    def _transaction(self, client: bigquery.Client, script: str, params, table: str) -> None:
        """Run a multi-statement transaction, again after a pause when BigQuery aborted it for a
        concurrent one on `table` (each statement of it is idempotent)."""
        retry(
            lambda: self._query(client, script, params, doing=f"replace rows of {table}"),
            retry_on=lambda exc: (
                isinstance(exc, google_exceptions.GoogleAPICallError) and bool(_CONCURRENT_UPDATE.search(str(exc)))
            ),
            attempts=self.swap_attempts,
            first_pause=self.swap_backoff_seconds,
            jitter=0.5,  # two swaps that collided do not run again in step
            on_retry=lambda attempt, exc, pause, _: dg.get_dagster_logger().warning(
                f"transaction aborted by a concurrent transaction on {table} (attempt {attempt} of "
                f"{self.swap_attempts}); retrying in {pause:.1f} s: {exc.message}"
            ),
        )

    def _scalar(self, client, sql: str, params=()) -> int:
        return next(iter(self._query(client, sql, params, doing="count rows")))[0]

    def slice_rows(self, color, month) -> int:
        """Rows of the color x month slice of `rides` (0 when the table is not there)."""
        with self.bigquery.get_client() as client:
            rides = _quote(self._table_id(client, RIDES_TABLE))
            sql = f"SELECT COUNT(*) FROM {rides} WHERE color = @color AND month = @month"

            def count() -> int:
                try:
                    return self._scalar(client, sql, self._slice_params(color, month))
                except google_exceptions.NotFound:  # no table yet
                    return 0

            return self._call(client, f"count {rides}", "bigquery.jobs.create, bigquery.tables.getData", count)

    def replace_table(self, name: str, table: pa.Table) -> int:
        """Replace the table's contents with `table` in one WRITE_TRUNCATE load job."""
        # One load job with WRITE_TRUNCATE: BigQuery swaps the table's contents atomically when the
        # job succeeds, and leaves them as they were when it fails.
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        with self.bigquery.get_client() as client:
            self._ensure_dataset(client)
            table_id = self._table_id(client, name)
            job_config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                schema=_bq_schema(table.schema),
            )
            doing = f"replace {table_id}"

            def start(job_id: str) -> bigquery.LoadJob:
                buffer.seek(0)  # again from the start when started again
                # The upload is retried by the library's upload strategy: num_retries (its default,
                # 6) with pauses from 1 s doubling; each request cut at request_timeout_seconds.
                return client.load_table_from_file(
                    buffer,
                    table_id,
                    job_id=job_id,
                    job_config=job_config,
                    num_retries=6,
                    timeout=self.request_timeout_seconds,
                )

            needs = "bigquery.jobs.create, bigquery.tables.create, bigquery.tables.updateData"
            self._call(client, doing, needs, lambda: self._load(client, doing, start))
            return self._call(
                client,
                f"count {table_id}",
                "bigquery.jobs.create, bigquery.tables.getData",
                lambda: self._scalar(client, f"SELECT COUNT(*) FROM {_quote(table_id)}"),
            )

    def replace_rows(self, name, *, columns, delete_where, select, params) -> None:
        """Create the table if missing, then delete `delete_where` and insert `select` in one transaction."""
        with self.bigquery.get_client() as client:
            self._ensure_dataset(client)
            table_id = self._table_id(client, name)
            table = _quote(table_id)
            create = f"CREATE TABLE IF NOT EXISTS {table} ({columns})"
            self._call(
                client,
                f"create table {table_id}",
                "bigquery.tables.create",
                lambda: self._query(client, create, doing=f"create table {table_id}"),
            )
            # Like the slice swap: one multi-statement transaction, every value a query parameter,
            # run again when a concurrent one on the table aborted it.
            script = (
                f"BEGIN TRANSACTION;\nDELETE FROM {table} WHERE {delete_where};\nINSERT INTO {table} {select};\n"
                "COMMIT TRANSACTION;"
            )
            query_params = [_parameter(key, value) for key, value in params.items()]
            needs = "bigquery.jobs.create, bigquery.tables.updateData and bigquery.tables.getData"
            self._call(
                client,
                f"replace rows of {table_id}",
                needs,
                lambda: self._transaction(client, script, query_params, name),
            )

    def table_name(self, name: str) -> str:
        """The table's quoted `project.dataset.table` name, for SQL."""
        project = self.bigquery.project
        if project is None:  # Application Default Credentials name it
            with self.bigquery.get_client() as client:
                project = client.project
        return _quote(f"{project}.{self.dataset}.{name}")

    def has_table(self, name: str) -> bool:
        """Whether the dataset holds the table."""
        with self.bigquery.get_client() as client:
            table_id = self._table_id(client, name)
            doing = f"read table {table_id}"

            def exists() -> bool:
                try:
                    client.get_table(table_id, **self._limits(doing))
                    return True
                except google_exceptions.NotFound:
                    return False

            return self._call(client, doing, "bigquery.tables.get", exists)

    def query(self, sql, params=None):
        """Run one statement with named parameters; its result as a DataFrame."""
        query_params = [_parameter(name, value) for name, value in (params or {}).items()]
        with self.bigquery.get_client() as client:
            return self._call(
                client,
                "run a query",
                "bigquery.jobs.create and bigquery.tables.getData",
                lambda: self._query(client, sql, query_params).to_dataframe(create_bqstorage_client=False),
            )

    @staticmethod
    def _slice_params(color: str, month: dt.date) -> list:
        return [
            bigquery.ScalarQueryParameter("color", "STRING", color),
            bigquery.ScalarQueryParameter("month", "DATE", month),
        ]

    def slice_row_counts(self):
        """Rows of each color x month slice of `rides` (empty when the table is not there)."""
        with self.bigquery.get_client() as client:
            rides = _quote(self._table_id(client, RIDES_TABLE))
            sql = f"SELECT color, month, COUNT(*) FROM {rides} GROUP BY color, month"

            def counts() -> dict:
                try:
                    return {(row[0], row[1]): row[2] for row in self._query(client, sql)}
                except google_exceptions.NotFound:  # no table yet
                    return {}

            return self._call(client, f"count {rides}", "bigquery.jobs.create, bigquery.tables.getData", counts)
