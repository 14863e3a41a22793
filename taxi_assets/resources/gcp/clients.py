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
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import dagster as dg
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery, storage
from pydantic import Field

from taxi_assets import settings
from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.retrying import retry

T = TypeVar("T")

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


class QuotaExhausted(SetupError):
    """A quota or rate limit still refused the call after retries with backoff inside the step: the
    message names the quota; a step retry a few seconds later would meet it again."""


# What Google's JSON error payloads say in `errors[0].reason` (BigQuery's error messages page;
# GCS's JSON API errors). A 403 is not always a permission: quotas, rates and billing answer 403 too.
PERMISSION_REASONS = frozenset({"accessDenied", "forbidden", "insufficientPermissions", "permissionDenied"})
# Transient: BigQuery's `quotaExceeded` (concurrent jobs, table operations per day, ...) and
# `rateLimitExceeded`, and its server-side errors. The client libraries retry some of these
# themselves (rateLimitExceeded, backendError, internalError, badGateway), never quotaExceeded.
TRANSIENT_REASONS = frozenset(
    {
        "quotaExceeded",
        "rateLimitExceeded",
        "backendError",
        "internalError",
        "badGateway",
        "jobBackendError",
        "jobInternalError",
        "jobRateLimitExceeded",
    }
)
_TRANSIENT_TYPES = (
    google_exceptions.TooManyRequests,
    google_exceptions.InternalServerError,
    google_exceptions.BadGateway,
    google_exceptions.ServiceUnavailable,
    google_exceptions.GatewayTimeout,
)
# A sandbox project (no billing account) answers DML with "Billing has not been enabled for this
# project ... DML queries are not allowed in the free tier" (reason billingNotEnabled).
_BILLING = re.compile(r"billing (has not been|is not) enabled|not allowed in the (free tier|sandbox)", re.IGNORECASE)
# A job in one location that names a dataset in another: "Not found: Dataset p:d was not found in location EU".
_NOT_IN_LOCATION = re.compile(r"was not found in location (\S+)")


def reason(exc: BaseException) -> str | None:
    """The first `reason` of a Google API error's payload (`errors[0]["reason"]`), if any."""
    try:
        return exc.errors[0]["reason"]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def is_transient(exc: BaseException) -> bool:
    """A quota, a rate limit or a server-side error: worth the same call again after a pause."""
    if not isinstance(exc, google_exceptions.GoogleAPICallError):
        return False
    why = reason(exc)
    if why in TRANSIENT_REASONS:
        return True
    return isinstance(exc, _TRANSIENT_TYPES) and why not in PERMISSION_REASONS and not is_billing(exc)


def is_billing(exc: BaseException) -> bool:
    return reason(exc) == "billingNotEnabled" or bool(_BILLING.search(str(getattr(exc, "message", exc))))


def location_not_found(exc: BaseException) -> str | None:
    """The location a job ran in, when BigQuery says the dataset it names is not there."""
    if not isinstance(exc, google_exceptions.NotFound):
        return None
    found = _NOT_IN_LOCATION.search(str(exc.message))
    return found.group(1).rstrip(".") if found else None


def retrying_transient(fn: Callable[[], T], *, service: str, doing: str, attempts: int, first_pause: float) -> T:
    """`fn()`, called again with backoff while it meets a quota, a rate limit or a server-side
    error (`is_transient`); after `attempts` calls, QuotaExhausted naming the quota."""

    def give_up(attempt: int, exc: BaseException, elapsed: float) -> QuotaExhausted:
        why = reason(exc) or f"HTTP {getattr(exc, 'code', '?')}"
        kind = {
            "quotaExceeded": "a BigQuery quota is used up (the message names it: e.g. table operations per table "
            "per day, concurrent jobs); see https://cloud.google.com/bigquery/quotas. Rerun when it "
            "resets, or ask for more quota",
            "rateLimitExceeded": "a rate limit (the message names it); rerun later, or run fewer partitions at once",
        }.get(why, "the service kept failing on its side; rerun later")
        return QuotaExhausted(
            f"{service} refused to {doing} ({why}) {attempt} times over {elapsed:.0f} s: {kind}. "
            f"Server said: {getattr(exc, 'message', exc)}"
        )

    return retry(
        fn,
        retry_on=is_transient,
        attempts=attempts,
        first_pause=first_pause,
        max_pause=60.0,
        jitter=0.5,
        on_retry=lambda attempt, exc, pause, _: dg.get_dagster_logger().warning(
            f"{service} refused to {doing} ({reason(exc) or getattr(exc, 'code', '?')}, attempt {attempt} of "
            f"{attempts}); retrying in {pause:.1f} s: {getattr(exc, 'message', exc)}"
        ),
        on_give_up=give_up,
        chain=False,  # the message carries the server's
    )


def _bucket_missing(client, bucket: str, exc: google_exceptions.NotFound) -> bool:
    """Whether a 404 met while working in `bucket` is the bucket's own. Object and bucket 404s carry
    the same reason (`notFound`) and an object's message names its bucket ("No such object:
    bucket/key"), so the message alone says only "The specified bucket does not exist."; a 404
    without a payload (the emulator's) is settled by asking for the bucket itself."""
    message = str(exc.message)
    if "specified bucket does not exist" in message.lower():
        return True
    if exc.errors or client is None:
        return False
    try:
        return not client.bucket(bucket).exists()
    except google_exceptions.GoogleAPICallError:  # e.g. no storage.buckets.get: cannot tell
        return False


@contextlib.contextmanager
def explained(client, *, service: str, doing: str, needs: str, grant: str, bucket: str | None = None) -> Iterator[None]:
    """Classify a refusal by the `reason` in its payload: a permission becomes AccessDenied naming
    the permission, the identity and the role to grant; a project without billing, and a missing
    bucket, SetupErrors saying the fix. All three are setup errors: retrying would repeat them.
    Quotas, rates and server-side errors pass through (see `retrying_transient`), as does anything else."""
    try:
        yield
    except google_exceptions.GoogleAPICallError as exc:
        if is_billing(exc):
            raise SetupError(
                f"{service} refused to {doing}: the project has no billing account (a BigQuery sandbox allows no "
                f"DML, which the warehouse needs). Enable billing for the project "
                f"(https://cloud.google.com/billing/docs/how-to/modify-project). Server said: {exc.message}"
            ) from None
        if isinstance(exc, google_exceptions.Forbidden) and (reason(exc) in PERMISSION_REASONS or reason(exc) is None):
            raise AccessDenied(
                f"{service} refused to {doing} for {identity(client)} (HTTP 403): it needs {needs}. "
                f"Grant {grant}. Server said: {exc.message}"
            ) from None
        if isinstance(exc, google_exceptions.NotFound) and bucket is not None and _bucket_missing(client, bucket, exc):
            raise missing_bucket(bucket) from None
        raise
