"""Google clients for the gcp target, on dagster-gcp's GCSResource and BigQueryResource, and what
their refusals mean.

Extended in two ways: a base64 service-account key (`GCP_CREDENTIALS`, on one line or wrapped as
GNU base64 prints it) for GCS too, turned into credentials in memory (dagster-gcp writes it to a
temp file and sets an environment variable for the process; here no file holding the key is ever
written: the lake's GCS client and the warehouse's BigQuery client both take it from memory); and
the emulators the tests use (`STORAGE_EMULATOR_HOST`, `BIGQUERY_EMULATOR_HOST`), reached with the key's
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
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import requests
from dagster_gcp import BigQueryResource, GCSResource
from google.api_core import exceptions as google_exceptions
from google.api_core import retry as retries
from google.auth import exceptions as google_auth_exceptions
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
        """A storage client: the key in GCP_CREDENTIALS, else Application Default Credentials (none: emulator)."""
        credentials = key_credentials(self.gcp_credentials)
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return storage.Client(project=self.project, credentials=credentials or AnonymousCredentials())
        return storage.Client(project=self.project, credentials=credentials)


class TaxiBigQueryResource(BigQueryResource):
    """BigQueryResource whose location defaults to BQ_LOCATION at launch, and which follows
    BIGQUERY_EMULATOR_HOST (the stock client has no endpoint option)."""

    @contextlib.contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        """A BigQuery client for the project and location, closed when the block ends."""
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
    """The error for a GCS_BUCKET that does not exist, with the command that creates it."""
    return SetupError(
        f"GCS bucket gs://{bucket} does not exist (GCS_BUCKET); create it in the dataset's location, "
        f"e.g. `gcloud storage buckets create gs://{bucket} --location=US`"
    )


class QuotaExceeded(SetupError):
    """BigQuery's or GCS's `quotaExceeded`: a longer-term quota (table operations per day, load
    jobs per project ...) is used up. Google says to wait 10 minutes or more, and failed jobs count
    against the quotas too: failed at once, without in-step or step retries (a SetupError), naming
    the quota (the server's message does)."""


class Unavailable(Exception):
    """A rate limit or a server-side error (429, 5xx, rateLimitExceeded, backendError) that outlasted
    the retries within their bound, or a job that did not finish in time. Not a SetupError: the step
    fails, and Dagster's retry policy runs it again later."""


# What Google's JSON error payloads say in `errors[0].reason` (BigQuery's error messages page;
# GCS's JSON API errors). A 403 is not always a permission: quotas, rates and billing answer 403 too.
PERMISSION_REASONS = frozenset({"accessDenied", "forbidden", "insufficientPermissions", "permissionDenied"})
# Short-term: worth the same call again after a pause (BigQuery's troubleshooting page: retry
# rateLimitExceeded with exponential backoff). `quotaExceeded` is not among them.
TRANSIENT_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "backendError",
        "internalError",
        "badGateway",
        "jobBackendError",
        "jobInternalError",
        "jobRateLimitExceeded",
    }
)
QUOTA_REASON = "quotaExceeded"
# 408, 429 and the 5xx a server may answer for a while (as the storage client's own retry takes them).
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# A connection refused, reset or timed out (requests', urllib3's, google-auth's); not a TLS failure.
_CONNECTION_ERRORS = (
    ConnectionError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    google_auth_exceptions.TransportError,
)
# A sandbox project (no billing account) answers DML with "Billing has not been enabled for this
# project ... DML queries are not allowed in the free tier" (reason billingNotEnabled).
_BILLING = re.compile(r"billing (has not been|is not) enabled|not allowed in the (free tier|sandbox)", re.IGNORECASE)
# A job in one location that names a dataset in another: "Not found: Dataset p:d was not found in location EU".
_NOT_IN_LOCATION = re.compile(r"was not found in location (\S+)")


def cause(exc: BaseException) -> BaseException:
    """What a library retry gave up on: a RetryError's last error (the client libraries raise
    RetryError when their deadline runs out), else the error itself."""
    while isinstance(exc, google_exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause
    return exc


def _payload_reason(response) -> str | None:
    try:
        return response.json()["error"]["errors"][0]["reason"]
    except Exception:  # no response, not JSON, another shape: no reason
        return None


def reason(exc: BaseException) -> str | None:
    """The first `reason` of a Google API error's payload (`errors[0]["reason"]`), if any; also for
    an error the storage client re-raised from an HTTP response without parsing it."""
    exc = cause(exc)
    try:
        return exc.errors[0]["reason"]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return _payload_reason(getattr(exc, "response", None))


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return getattr(getattr(exc, "response", None), "status_code", None)


def is_quota(exc: BaseException) -> bool:
    """Whether Google refused the call because a quota is used up (not worth retrying soon)."""
    return reason(exc) == QUOTA_REASON


def is_transient(exc: BaseException) -> bool:
    """A rate limit, a server-side error or a dropped connection: worth the same call again after a
    pause. Never a quota, a permission or billing, whatever the status. The predicate of every
    library retry (`call_retry`) and of the warehouse's retry of failed jobs."""
    exc = cause(exc)
    why = reason(exc)
    if why == QUOTA_REASON or why in PERMISSION_REASONS or is_billing(exc):
        return False
    if why in TRANSIENT_REASONS:
        return True
    if isinstance(exc, google_exceptions.GoogleAPICallError):
        return _status(exc) in _TRANSIENT_STATUS
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    return getattr(exc, "response", None) is not None and _status(exc) in _TRANSIENT_STATUS  # GCS's InvalidResponse


def is_billing(exc: BaseException) -> bool:
    """Whether the call failed because billing is not enabled on the project."""
    return reason(exc) == "billingNotEnabled" or bool(_BILLING.search(str(getattr(exc, "message", exc))))


def location_not_found(exc: BaseException) -> str | None:
    """The location a job ran in, when BigQuery says the dataset it names is not there."""
    exc = cause(exc)
    if not isinstance(exc, google_exceptions.NotFound):
        return None
    found = _NOT_IN_LOCATION.search(str(exc.message))
    return found.group(1).rstrip(".") if found else None


def said(exc: BaseException) -> str:
    """What the server said, for a message: the error's own text (never a credential: Google's
    payloads carry none)."""
    exc = cause(exc)
    return str(getattr(exc, "message", None) or exc)


@dataclass(frozen=True)
class Bounds:
    """How long one Google API call may take: each HTTP request is cut at `request_timeout`
    seconds; the client library retries a transient failure (`is_transient`) with exponential
    backoff and full jitter from `first_pause`, starting no new request after `deadline` seconds.
    So one call takes at most `deadline + request_timeout`, then fails as Unavailable."""

    deadline: float
    request_timeout: float
    first_pause: float


def call_retry(bounds: Bounds, *, service: str, doing: str) -> retries.Retry:
    """The `retry=` of every call: the client library's own retry object, with our predicate (also
    a 403 rateLimitExceeded, which GCS's default never retries; never quotaExceeded) and an
    explicit deadline (the libraries' defaults are 120 s on GCS and 600 s on BigQuery), logging
    each retry."""

    def log(exc: Exception) -> None:
        dg.get_dagster_logger().warning(
            f"{service} refused to {doing} ({reason(exc) or f'HTTP {_status(cause(exc))}'}); retrying with backoff "
            f"for up to {bounds.deadline:g} s: {said(exc)[:300]}"
        )

    return retries.Retry(
        predicate=is_transient,
        initial=bounds.first_pause,
        # The longest pause: GCS's retry-strategy page suggests a maximum backoff of 32 or 64 s.
        maximum=max(bounds.first_pause, 32.0),
        multiplier=2.0,
        timeout=bounds.deadline,
        on_error=log,
    )


def unavailable(exc: BaseException, *, service: str, doing: str, bound: str) -> Unavailable:
    """The error for a call that kept failing on Google's side (or rate-limited) until `bound`."""
    why = reason(exc) or f"HTTP {_status(cause(exc)) or type(cause(exc)).__name__}"
    kind = (
        "a rate limit: run fewer partitions at once"
        if why in ("rateLimitExceeded", "jobRateLimitExceeded") or _status(cause(exc)) == 429
        else "the service kept failing on its side"
    )
    return Unavailable(
        f"{service} could not {doing} ({why}): {kind}. Retried with backoff for {bound}; the step fails and is "
        f"run again later by its retry policy (or rerun it). Server said: {said(exc)[:500]}"
    )


def _bucket_missing(client, bucket: str, exc: google_exceptions.NotFound, bounds: Bounds) -> bool:
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
        retry = call_retry(bounds, service="GCS", doing=f"look for bucket {bucket}")
        return not client.bucket(bucket).exists(retry=retry, timeout=bounds.request_timeout)
    except google_exceptions.GoogleAPIError:  # e.g. no storage.buckets.get: cannot tell
        return False


def quota_exceeded(exc: BaseException, *, service: str, doing: str) -> QuotaExceeded:
    """The error for a used-up quota: not retried, with when and how to try again."""
    return QuotaExceeded(
        f"{service} refused to {doing}: a quota is used up (quotaExceeded). Server said: {said(exc)[:500]}. "
        "Not retried, and nothing more is started: Google asks to wait 10 minutes or more, and failed jobs count "
        "against the quotas too. Rerun the partition later (a daily quota refills over 24 hours), or ask for more "
        "quota (https://cloud.google.com/bigquery/quotas, https://cloud.google.com/storage/quotas)"
    )


@contextlib.contextmanager
def explained(
    client, *, service: str, doing: str, needs: str, grant: str, bounds: Bounds, bucket: str | None = None
) -> Iterator[None]:
    """The one place a Google error is classified, by the `reason` in its payload, after unwrapping
    the RetryError a library retry ends with (`cause`):
    - a permission: AccessDenied naming the permission, the identity and the role to grant;
    - a project without billing, a missing bucket: SetupErrors saying the fix;
    - quotaExceeded: QuotaExceeded naming the quota (a SetupError: no step retry);
    - a rate limit, a server-side error, a dropped connection, left after the library's retries:
      Unavailable (retryable: the step's retry policy runs it again later).
    Setup errors fail the step at once (`failing_fast`); anything else passes through as it is."""
    try:
        yield
    except Exception as raised:
        exc = cause(raised)
        if not isinstance(exc, google_exceptions.GoogleAPICallError) and not is_transient(exc):
            raise
        if is_billing(exc):
            raise SetupError(
                f"{service} refused to {doing}: the project has no billing account (a BigQuery sandbox allows no "
                f"DML, which the warehouse needs). Enable billing for the project "
                f"(https://cloud.google.com/billing/docs/how-to/modify-project). Server said: {said(exc)}"
            ) from None
        if isinstance(exc, google_exceptions.Forbidden) and (reason(exc) in PERMISSION_REASONS or reason(exc) is None):
            raise AccessDenied(
                f"{service} refused to {doing} for {identity(client)} (HTTP 403): it needs {needs}. "
                f"Grant {grant}. Server said: {said(exc)}"
            ) from None
        if is_quota(exc):
            raise quota_exceeded(exc, service=service, doing=doing) from None
        if (
            isinstance(exc, google_exceptions.NotFound)
            and bucket is not None
            and _bucket_missing(client, bucket, exc, bounds)
        ):
            raise missing_bucket(bucket) from None
        if is_transient(exc):
            bound = f"up to {bounds.deadline:g} s (call_deadline_seconds)"
            raise unavailable(exc, service=service, doing=doing, bound=bound) from None
        raise
