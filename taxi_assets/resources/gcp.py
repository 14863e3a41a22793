"""The gcp target's resources: dagster-gcp's GCS and BigQuery resources, configured from the
environment, with two small extensions (a base64 key for GCS too; an emulator endpoint)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import dagster as dg
from dagster_gcp import BigQueryResource, GCSResource
from dagster_gcp.bigquery.utils import setup_gcp_creds
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage
from pydantic import Field

from taxi_assets.resources.lake import GCSLake
from taxi_assets.resources.warehouse import BigQueryWarehouse

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
