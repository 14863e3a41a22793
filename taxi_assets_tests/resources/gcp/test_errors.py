"""What the warehouse does with BigQuery's refusals, classified by the `reason` in Google's error
payload: the emulator never refuses, so a loopback proxy in front of it answers chosen requests
with BigQuery's documented error payloads (troubleshooting pages, "Error messages"). Each test
counts the requests the proxy saw (retried or not) and looks at what is left in the dataset."""

import contextlib
import datetime as dt
import gzip
import os

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.cleaning import clean_trip_file
from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.resources.gcp.clients import QuotaExhausted, TaxiBigQueryResource, TaxiGCSResource
from taxi_assets.resources.gcp.warehouse import BigQueryWarehouse
from taxi_assets.sources import RELEASES
from taxi_assets_tests.conftest import real_rows
from taxi_assets_tests.emulators import RewritingProxy, google_error

YELLOW = RELEASES.schemas["yellow"]
JANUARY = dt.date(2021, 1, 1)
KEY = "data/yellow/yellow_tripdata_2021-01.parquet"
ROWS = real_rows("yellow_tripdata_2021-01_head3000.csv")
QUOTA = (
    "Quota exceeded: Your table exceeded quota for imports or query appends per table. For more information, "
    "see https://cloud.google.com/bigquery/docs/troubleshoot-quotas"
)


def _publish(tmp_path, env, lines) -> str:
    raw, out = tmp_path / "raw.csv.gz", tmp_path / "clean.parquet"
    raw.write_bytes(gzip.compress("".join(lines).encode()))
    clean_trip_file(
        raw, out, color="yellow", schema=YELLOW, month_start=JANUARY, month_end=dt.date(2021, 2, 1), file_label="t"
    )
    storage.Client(project=env["project"]).bucket(env["bucket"]).blob(KEY).upload_from_filename(str(out))
    return f"gs://{env['bucket']}/{KEY}"


def _warehouse(env, **settings) -> BigQueryWarehouse:
    return BigQueryWarehouse(
        bigquery=TaxiBigQueryResource(project=env["project"]),
        gcs=TaxiGCSResource(project=env["project"]),
        dataset=env["dataset"],
        transient_backoff_seconds=0.01,
        **settings,
    )


def _client(gcp_emulators) -> bigquery.Client:
    return bigquery.Client(
        project=gcp_emulators.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcp_emulators.bigquery_host},
    )


def _tables(gcp_emulators, env) -> list[str]:
    return sorted(t.table_id for t in _client(gcp_emulators).list_tables(env["dataset"]))


def _jobs_insert(kind: bytes):
    """Whether a request is a jobs.insert of this kind (b'"load"', b'"query"')."""

    def matches(method, path, body) -> bool:
        return method == "POST" and path.split("?")[0].endswith("/jobs") and kind in (body or b"")

    return matches


@contextlib.contextmanager
def _through(proxy, monkeypatch):
    """BigQuery clients made inside the block talk to the proxy; after it, to the emulator again."""
    before = os.environ["BIGQUERY_EMULATOR_HOST"]
    with proxy.running() as url:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", url)
        try:
            yield
        finally:
            monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", before)


def _replace(warehouse, uri):
    return warehouse.replace_slice(
        source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
    )


def test_a_quota_error_is_retried_with_backoff_and_the_load_then_succeeds(
    gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    """403 quotaExceeded on the load job (BigQuery answers quotas with 403, as it does permissions):
    retried, not reported as a missing permission."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    refusals = [2]
    is_load = _jobs_insert(b'"load"')

    def answer(method, path, body):
        if is_load(method, path, body) and refusals[0]:
            refusals[0] -= 1
            return 403, google_error(403, "PERMISSION_DENIED", "quotaExceeded", QUOTA)
        return None

    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=answer)
    with _through(proxy, monkeypatch):
        load = _replace(_warehouse(gcp_env), uri)
    assert load.rows == 3000
    loads = [r for r in proxy.requests if r.endswith("/jobs") and r.startswith("POST")]
    assert len(loads) == 2 + 1 + 3  # two refused load jobs, the load, the swap and two counts
    assert _tables(gcp_emulators, gcp_env) == ["rides"]  # the staging table went


def test_a_quota_that_stays_exhausted_fails_naming_the_quota_and_leaves_the_old_slice(
    gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    uri = _publish(tmp_path, gcp_env, ROWS)
    warehouse = _warehouse(gcp_env, transient_attempts=3)
    assert _replace(warehouse, uri).rows == 3000
    _publish(tmp_path, gcp_env, ROWS[:101])
    is_load = _jobs_insert(b'"load"')
    proxy = RewritingProxy(
        gcp_emulators.bigquery_host,
        answer=lambda *request: (
            (403, google_error(403, "PERMISSION_DENIED", "quotaExceeded", QUOTA)) if is_load(*request) else None
        ),
    )
    with _through(proxy, monkeypatch):
        with pytest.raises(QuotaExhausted) as err:
            _replace(warehouse, uri)
    message = str(err.value)
    assert "(quotaExceeded) 3 times" in message and "a BigQuery quota is used up" in message
    assert "exceeded quota for imports or query appends per table" in message
    assert "Grant" not in message and "permission" not in message.lower()  # not reported as a permission
    assert proxy.count("POST", "/jobs") == 3  # the three load attempts; no swap
    assert isinstance(err.value, SetupError)  # no step retry on top of the in-step ones
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): 3000}
    assert _tables(gcp_emulators, gcp_env) == ["rides"]


def test_access_denied_on_datasets_create_names_the_permission_and_is_not_retried(
    gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    """The identity may not create datasets (BigQuery Data Editor on a dataset only, and no dataset yet)."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    denied = (
        f"Access Denied: Project {gcp_env['project']}: User does not have bigquery.datasets.create permission "
        f"in project {gcp_env['project']}."
    )

    def answer(method, path, body):
        if method == "POST" and path.split("?")[0].endswith("/datasets"):
            return 403, google_error(403, "PERMISSION_DENIED", "accessDenied", denied)
        return None

    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=answer)
    with _through(proxy, monkeypatch):
        with pytest.raises(AccessDenied) as err:
            _replace(_warehouse(gcp_env), uri)
    message = str(err.value)
    assert f"refused to create dataset {gcp_env['project']}.{gcp_env['dataset']} in US" in message
    assert "it needs bigquery.datasets.create on the project" in message
    assert "Application Default Credentials identity" in message
    assert f"bq --location=US mk --dataset {gcp_env['project']}:{gcp_env['dataset']}" in message
    assert proxy.count("POST", "/datasets") == 1
    assert [d.dataset_id for d in _client(gcp_emulators).list_datasets()].count(gcp_env["dataset"]) == 0


def test_billing_not_enabled_is_a_setup_error_saying_to_enable_billing(gcp_emulators, gcp_env, tmp_path, monkeypatch):
    """A BigQuery sandbox project refuses DML: the swap's transaction is answered so, once, not retried."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    warehouse = _warehouse(gcp_env)
    assert _replace(warehouse, uri).rows == 3000
    sandbox = (
        "Billing has not been enabled for this project. Enable billing at "
        "https://console.cloud.google.com/billing. DML queries are not allowed in the free tier. "
        "Set up a billing account to remove this restriction."
    )
    is_script = _jobs_insert(b"BEGIN TRANSACTION")
    proxy = RewritingProxy(
        gcp_emulators.bigquery_host,
        answer=lambda *r: (
            (403, google_error(403, "PERMISSION_DENIED", "billingNotEnabled", sandbox)) if is_script(*r) else None
        ),
    )
    with _through(proxy, monkeypatch):
        with pytest.raises(SetupError) as err:
            _replace(warehouse, uri)
    message = str(err.value)
    assert "the project has no billing account" in message and "Enable billing for the project" in message
    assert not isinstance(err.value, AccessDenied)
    assert sum(1 for r in proxy.requests if r.startswith("POST") and r.endswith("/jobs")) == 2  # load, script
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): 3000}
    assert _tables(gcp_emulators, gcp_env) == ["rides"]


def test_a_dataset_in_another_location_is_a_setup_error_naming_both(gcp_emulators, gcp_env, monkeypatch):
    """A query job run in BQ_LOCATION (US) naming a dataset made in EU: BigQuery answers 404
    "Not found: Dataset ... was not found in location US". Named, not retried."""
    dataset = bigquery.Dataset(f"{gcp_env['project']}.{gcp_env['dataset']}")
    dataset.location = "EU"
    _client(gcp_emulators).create_dataset(dataset)
    missing = f"Not found: Dataset {gcp_env['project']}:{gcp_env['dataset']} was not found in location US"
    is_query = _jobs_insert(b'"query"')
    proxy = RewritingProxy(
        gcp_emulators.bigquery_host,
        answer=lambda *r: (404, google_error(404, "NOT_FOUND", "notFound", missing)) if is_query(*r) else None,
    )
    with _through(proxy, monkeypatch):
        with pytest.raises(SetupError) as err:
            _warehouse(gcp_env).query(f"SELECT COUNT(*) FROM `{gcp_env['project']}.{gcp_env['dataset']}.zones`")
    message = str(err.value)
    assert "ran the job in location US (BQ_LOCATION)" in message and "is in EU" in message
    assert proxy.count("POST", "/jobs") == 1
