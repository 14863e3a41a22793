"""Google clients for the gcp target, on dagster-gcp's GCSResource and BigQueryResource, and what
their refusals mean.

Extended in two ways: a base64 service-account key (`GCP_CREDENTIALS`, on one line or wrapped as
GNU base64 prints it) for GCS too, turned into credentials in memory (dagster-gcp writes it to a
temp file and sets an environment variable for the process; no file holding the key is ever
written here: the analytics IO manager builds its clients with `bigquery_client` too); and the
emulators the tests use (`STORAGE_EMULATOR_HOST`, `BIGQUERY_EMULATOR_HOST`), reached with the key's
credentials when one is given, anonymous ones otherwise. Without a key, Application Default
Credentials apply (`gcloud auth application-default login`, GOOGLE_APPLICATION_CREDENTIALS, or the
attached service account). No credential is ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator

from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery, storage
from pydantic import Field

from taxi_assets import settings
from taxi_assets.resources.errors import AccessDenied, SetupError

KEY_HELP = "GCP_CREDENTIALS: a base64-encoded service-account JSON key (optional)"


def key_credentials(encoded_key: str | None) -> Credentials | None:
    """Credentials from a base64 key, or None for Application Default Credentials."""
    encoded_key = encoded_key or settings.gcp_credentials()
    if not encoded_key:
        return None
    from google.oauth2 import service_account

    try:
        # GNU base64 wraps at 76 columns: the line breaks (and any other whitespace) are not the key.
        info = json.loads(base64.b64decode("".join(encoded_key.split()), validate=True))
        return service_account.Credentials.from_service_account_info(info)
    except Exception as exc:  # the message could quote the key: say only what kind of problem
        raise SetupError(f"GCP_CREDENTIALS is not a base64 service-account JSON key ({type(exc).__name__})") from None


class TaxiGCSResource(GCSResource):
    """GCSResource with a base64 key, like dagster-gcp's BigQueryResource; anonymous against an emulator."""

    gcp_credentials: str | None = Field(default=None, description=KEY_HELP)

    def get_client(self) -> storage.Client:
        credentials = key_credentials(self.gcp_credentials)
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return storage.Client(project=self.project, credentials=credentials or AnonymousCredentials())
        return storage.Client(project=self.project, credentials=credentials)


class TaxiBigQueryResource(BigQueryResource):
    """BigQueryResource whose location defaults to BQ_LOCATION at launch, and which follows
    BIGQUERY_EMULATOR_HOST (the stock client has no endpoint option)."""

    @contextlib.contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        client = bigquery_client(self.project, self.location, self.gcp_credentials)
        try:
            yield client
        finally:
            client.close()


def bigquery_client(project: str | None, location: str | None, gcp_credentials: str | None) -> bigquery.Client:
    """A BigQuery client with the key's credentials made in memory (`GCP_CREDENTIALS` when
    `gcp_credentials` is None; Application Default Credentials without either), in `location`
    (default BQ_LOCATION), at BIGQUERY_EMULATOR_HOST when set (anonymous there without a key)."""
    location = location or settings.bq_location()
    credentials = key_credentials(gcp_credentials)
    emulator = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if emulator:
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return bigquery.Client(
            project=project,
            location=location,
            credentials=credentials or AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return bigquery.Client(project=project, location=location, credentials=credentials)


def identity(client) -> str:
    """Who a client acts as, for 403 messages (an email, never a key)."""
    credentials = getattr(client, "_credentials", None)
    return getattr(credentials, "service_account_email", None) or "the Application Default Credentials identity"


def missing_bucket(bucket: str) -> SetupError:
    return SetupError(
        f"GCS bucket gs://{bucket} does not exist (GCS_BUCKET); create it in the dataset's location, "
        f"e.g. `gcloud storage buckets create gs://{bucket} --location=US`"
    )


@contextlib.contextmanager
def explained(client, *, service: str, doing: str, needs: str, grant: str, bucket: str | None = None) -> Iterator[None]:
    """Turn a 403 into AccessDenied naming the permission, the identity and the role to grant, and
    a missing bucket into its fix. Both are setup errors: retrying would repeat them."""
    try:
        yield
    except google_exceptions.Forbidden as exc:
        raise AccessDenied(
            f"{service} refused to {doing} for {identity(client)} (HTTP 403): it needs {needs}. "
            f"Grant {grant}. Server said: {exc.message}"
        ) from None
    except google_exceptions.NotFound as exc:
        if bucket is not None and "bucket" in str(exc.message).lower():
            raise missing_bucket(bucket) from None
        raise
