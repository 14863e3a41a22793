"""Dagster's BigQueryPandasIOManager for the analytics tables (zones, monthly_trip_stats), with its
credentials in memory.

The stock IO manager hands a `gcp_credentials` key to `setup_gcp_creds`, which writes the private
key to a temp file and points GOOGLE_APPLICATION_CREDENTIALS at it for the whole run: a run killed
with SIGKILL leaves the key on disk. Its client (`BigQueryClient.connect`) makes a
`bigquery.Client(project, location)` from whatever the environment says. Here the DbClient's
`connect` is replaced: each connection is a client from `clients.bigquery_client`, the one the
warehouse uses, with the key (`GCP_CREDENTIALS`, read when the run starts, or the `gcp_credentials`
config) turned into credentials in memory, and `setup_gcp_creds` is never called. Same keys
accepted, same identity, as the lake and the warehouse; no key file is ever written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dagster._core.storage.db_io_manager import DbIOManager
from dagster_gcp.bigquery.io_manager import BigQueryClient
from dagster_gcp_pandas import BigQueryPandasIOManager
from google.cloud import bigquery

from taxi_assets.resources.gcp.clients import bigquery_client, key_credentials


class InMemoryCredentialsBigQueryClient(BigQueryClient):
    """dagster-gcp's BigQueryClient (table slices, deletes, selects), connecting with a client
    whose credentials were made in memory."""

    def __init__(self, write_mode, project: str | None, location: str | None, gcp_credentials: str | None):
        super().__init__(write_mode=write_mode)  # no key: the parent would only keep it
        self.project = project
        self.location = location
        self.key = gcp_credentials

    def get_client(self) -> bigquery.Client:
        return bigquery_client(self.project, self.location, self.key)

    @contextlib.contextmanager
    def connect(self, context, table_slice) -> Iterator[bigquery.Client]:
        client = self.get_client()
        try:
            yield client
        finally:
            client.close()


class TaxiBigQueryPandasIOManager(BigQueryPandasIOManager):
    """The stock IO manager, its key taken from `GCP_CREDENTIALS` when a run starts like the other
    gcp resources (the stock one takes it only as config) and kept in memory. Without a key:
    Application Default Credentials; against an emulator (BIGQUERY_EMULATOR_HOST) without a key:
    anonymous, like the warehouse."""

    def db_client(self) -> InMemoryCredentialsBigQueryClient:
        return InMemoryCredentialsBigQueryClient(self.write_mode, self.project, self.location, self.gcp_credentials)

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=self.db_client(),
            io_manager_name="BigQueryIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )

    @contextlib.contextmanager
    def yield_for_execution(self, context):
        # Not the parent's: it would write the key to a file (setup_gcp_creds) for the whole run.
        key_credentials(self.gcp_credentials)  # a bad key fails the run's start, as the parent's would
        yield self.create_io_manager(context)
