"""What the warehouse does with BigQuery's refusals and outages, classified by the `reason` in
Google's error payload: the emulator never refuses, so a loopback proxy in front of it answers
chosen requests with BigQuery's documented error payloads (troubleshooting pages, "Error
messages"), or a job that failed (HTTP 200 with `status.errorResult`). Each test counts the
requests the proxy saw (retried or not), times the persistent failures against the bounds set in
the warehouse's config, and looks at what is left in the dataset."""

import contextlib
import datetime as dt
import gzip
import json
import os
import time

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.cleaning import clean_trip_file
from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.resources.gcp.clients import QuotaExceeded, TaxiBigQueryResource, TaxiGCSResource, Unavailable
from taxi_assets.resources.gcp.warehouse import BigQueryWarehouse
from taxi_assets.sources import RELEASES
from taxi_assets_tests.emulators import RewritingProxy, google_error
from taxi_assets_tests.helpers import real_rows

YELLOW = RELEASES.schemas["yellow"]
JANUARY = dt.date(2021, 1, 1)
KEY = "data/yellow/yellow_tripdata_2021-01.parquet"
ROWS = real_rows("yellow_tripdata_2021-01_head3000.csv")[:301]  # the header and 300 rows: enough, and quick
N = 300
QUOTA = (
    "Quota exceeded: Your table exceeded quota for imports or query appends per table. For more information, "
    "see https://cloud.google.com/bigquery/docs/troubleshoot-quotas"
)
# Short bounds, set through the warehouse's config as a deployment would: the library retries a
# call for at most DEADLINE seconds, a failed job is started at most 3 times.
DEADLINE = 1.5
BOUNDS = {
    "call_deadline_seconds": DEADLINE,
    "first_pause_seconds": 0.05,
    "request_timeout_seconds": 10.0,
    "transient_attempts": 3,
    "transient_backoff_seconds": 0.05,
}
# Slack for a loaded machine (2 cores shared by several test runs): the requests themselves.
SLACK = 6.0

# Google's transient refusals: a 503, a 429 and a 403 that is a rate limit, not a permission.
TRANSIENT = {
    "503 backendError": (
        503,
        "UNAVAILABLE",
        "backendError",
        "Error encountered during execution. Retrying may solve it.",
    ),
    "429 rateLimitExceeded": (
        429,
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
        "Exceeded rate limits: too many api requests per user per method for this user_method",
    ),
    "403 rateLimitExceeded": (
        403,
        "PERMISSION_DENIED",
        "rateLimitExceeded",
        "Exceeded rate limits: too many table update operations for this table",
    ),
}


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
        **{**BOUNDS, **settings},
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
    """Whether a request is a jobs.insert of this kind (b'"load"', b'"query"', or a text in it)."""

    def matches(method, path, body) -> bool:
        return method == "POST" and path.split("?")[0].endswith("/jobs") and kind in (body or b"")

    return matches


def _failed_job(body: bytes, reason: str, message: str) -> dict:
    """The job resource of a job BigQuery accepted and that then failed: HTTP 200, state DONE,
    `status.errorResult` (BigQuery's "Error messages": a job's error is in its status)."""
    job = json.loads(body)
    error = {"reason": reason, "message": message}
    reference = {**job["jobReference"], "location": "US"}
    return {
        "kind": "bigquery#job",
        "id": f"{reference['projectId']}:US.{reference['jobId']}",
        "jobReference": reference,
        "configuration": job["configuration"],
        "status": {"state": "DONE", "errorResult": error, "errors": [error]},
    }


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


class Fault:
    """Where in BigQuery's API a refusal is injected, `times` times (None: always)."""

    def __init__(self, point: str, kind: str, times: int | None):
        self.point, self.kind, self.left = point, kind, times
        self.injected = 0
        self.status, self.state, self.reason, self.message = TRANSIENT[kind]

    def matches(self, method, path, body) -> bool:
        bare = path.split("?")[0]
        if self.point in ("jobs.insert", "failed job"):
            return _jobs_insert(b'"load"')(method, path, body)
        if self.point == "jobs.get":
            return method == "GET" and "/jobs/taxi_load_" in bare
        return method == "GET" and "/queries/" in bare  # getQueryResults

    def answer(self, method, path, body):
        if not self.matches(method, path, body) or self.left == 0:
            return None
        self.left = None if self.left is None else self.left - 1
        self.injected += 1
        if self.point == "failed job":
            return 200, _failed_job(body, self.reason, self.message)
        return self.status, google_error(self.status, self.state, self.reason, self.message)

    def reply(self, method, path, body, status, payload):
        """For jobs.get: the load job is still running when inserted (the emulator finishes every
        job at once), so the client polls jobs.get."""
        if self.point != "jobs.get" or not _jobs_insert(b'"load"')(method, path, body) or status != 200:
            return None
        job = json.loads(payload)
        job["status"] = {"state": "RUNNING"}
        return 200, job

    def requests(self, proxy) -> int:
        return sum(1 for method, path, body in proxy.received if self.matches(method, path, body))


FAULTS = [
    (point, kind)
    for point in ("jobs.insert", "jobs.get", "getQueryResults", "failed job")
    for kind in TRANSIENT
    if not (point == "failed job" and kind == "429 rateLimitExceeded")  # a job's error has no HTTP status
]


@pytest.mark.parametrize("point, kind", FAULTS, ids=[f"{p}-{k}" for p, k in FAULTS])
def test_a_transient_refusal_succeeds_after_one_retry(gcp_emulators, gcp_env, tmp_path, monkeypatch, point, kind):
    uri = _publish(tmp_path, gcp_env, ROWS)
    fault = Fault(point, kind, times=1)
    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=fault.answer, reply=fault.reply)
    with _through(proxy, monkeypatch):
        load = _replace(_warehouse(gcp_env), uri)
    assert load.rows == N and fault.injected == 1
    # One refused request (or failed job), then the same request again (a new job): one retry.
    assert fault.requests(proxy) == 2 if point != "getQueryResults" else fault.requests(proxy) >= 2
    assert _tables(gcp_emulators, gcp_env) == ["rides"]


@pytest.mark.parametrize("point, kind", FAULTS, ids=[f"{p}-{k}" for p, k in FAULTS])
def test_a_persistent_refusal_fails_within_the_bound_as_retryable(
    gcp_emulators, gcp_env, tmp_path, monkeypatch, point, kind
):
    """Every such request refused: the step fails within the library's deadline (or after 3 failed
    jobs), naming the service, the operation and the reason, as Unavailable (not a SetupError:
    Dagster's retry policy runs the step again later). The old slice stays."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    warehouse = _warehouse(gcp_env)
    before = kind == "503 backendError"  # a slice loaded before (one kind per point: the tests are timed)
    if before:
        assert _replace(warehouse, uri).rows == N
    fault = Fault(point, kind, times=None)
    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=fault.answer, reply=fault.reply)
    started = time.monotonic()
    with _through(proxy, monkeypatch):
        with pytest.raises(Unavailable) as err:
            _replace(warehouse, uri)
    took = time.monotonic() - started
    assert not isinstance(err.value, SetupError)
    message = str(err.value)
    assert message.startswith("BigQuery could not ") and f"({fault.reason})" in message
    assert f"load {uri}" in message  # the swap's results, or the load
    if point == "failed job":
        assert "3 jobs over" in message and fault.requests(proxy) == 3
    else:
        assert f"up to {DEADLINE:g} s (call_deadline_seconds)" in message
        assert fault.requests(proxy) >= 3  # retried with backoff, not given up at once
    assert took < DEADLINE + SLACK, took
    # The old slice, whole; or, when only reading the swap's results failed, the new one: the swap's
    # job ran and committed, and the step's rerun replaces the slice again.
    swapped = point == "getQueryResults"
    assert warehouse.slice_row_counts() == ({("yellow", JANUARY): N} if before or swapped else {})


def test_quota_exceeded_is_not_retried_names_the_quota_and_starts_nothing_more(
    gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    """403 quotaExceeded on the load job: one attempt, no library or in-step retry, no swap after
    it; a SetupError, so Dagster's retry policy does not start the step again either."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    warehouse = _warehouse(gcp_env)
    assert _replace(warehouse, uri).rows == N
    is_load = _jobs_insert(b'"load"')
    proxy = RewritingProxy(
        gcp_emulators.bigquery_host,
        answer=lambda *request: (
            (403, google_error(403, "PERMISSION_DENIED", "quotaExceeded", QUOTA)) if is_load(*request) else None
        ),
    )
    with _through(proxy, monkeypatch):
        with pytest.raises(QuotaExceeded) as err:
            _replace(warehouse, uri)
    message = str(err.value)
    assert "(quotaExceeded)" in message and "exceeded quota for imports or query appends per table" in message
    assert "Rerun the partition later" in message and "10 minutes" in message
    assert "Grant" not in message and "permission" not in message.lower()  # not reported as a permission
    assert isinstance(err.value, SetupError)
    assert proxy.count("POST", "/jobs") == 1  # the one load; no retry, no swap
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): N}
    assert _tables(gcp_emulators, gcp_env) == ["rides"]


@pytest.mark.parametrize(
    "reason, message, expected, jobs",
    [
        ("quotaExceeded", QUOTA, QuotaExceeded, 2),  # the load, then the swap that failed: nothing after
        (
            "accessDenied",
            "Access Denied: Table taxi-test:d.rides: Permission bigquery.tables.updateData denied",
            AccessDenied,
            2,
        ),
        # Its reason on real BigQuery is not verified here (invalidQuery assumed); the message is the one
        # the warehouse recognizes: the swap is run again, and succeeds.
        ("invalidQuery", "Transaction is aborted due to concurrent update against table taxi-test.d.rides", None, 3),
    ],
)
def test_a_failed_jobs_error_is_classified_like_its_http_twin(
    gcp_emulators, gcp_env, tmp_path, monkeypatch, reason, message, expected, jobs
):
    """The swap's job accepted, then failed with `status.errorResult` (HTTP 200)."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    warehouse = _warehouse(gcp_env, swap_backoff_seconds=0.05)
    is_swap = _jobs_insert(b"BEGIN TRANSACTION")
    failed = []

    def answer(method, path, body):
        if is_swap(method, path, body) and not failed:
            failed.append(path)
            return 200, _failed_job(body, reason, message)
        return None

    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=answer)
    with _through(proxy, monkeypatch):
        if expected is None:
            assert _replace(warehouse, uri).rows == N
        else:
            with pytest.raises(expected) as err:
                _replace(warehouse, uri)
            assert message in str(err.value)
    inserts = [r for r in proxy.requests if r == f"POST /bigquery/v2/projects/{gcp_env['project']}/jobs"]
    assert len(inserts) == (jobs if expected is not None else jobs + 2)  # + the two counts after a swap
    assert _tables(gcp_emulators, gcp_env) == ["rides"]


def test_a_load_jobs_insert_answered_409_after_a_lost_response_is_fetched(
    gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    """The first jobs.insert of the load reaches BigQuery (the job is made) but its answer is lost
    (a 503); the client sends it again with the same job id, and BigQuery answers 409 "Already
    Exists" (the emulator does not: the proxy answers as BigQuery does). The warehouse fetches that
    job and goes on: one load job, exactly one slice."""
    uri = _publish(tmp_path, gcp_env, ROWS)
    is_load = _jobs_insert(b'"load"')
    job_ids = []

    def reply(method, path, body, status, payload):
        if is_load(method, path, body) and not job_ids:
            job_ids.append(json.loads(body)["jobReference"]["jobId"])
            return 503, google_error(503, "UNAVAILABLE", "backendError", "Backend Error")
        return None

    def answer(method, path, body):
        if is_load(method, path, body) and job_ids:
            job_id = json.loads(body)["jobReference"]["jobId"]
            assert job_id == job_ids[0]  # the retried insert carries the same id
            return 409, google_error(409, "ALREADY_EXISTS", "duplicate", f"Already Exists: Job taxi-test:US.{job_id}")
        return None

    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=answer, reply=reply)
    warehouse = _warehouse(gcp_env)
    with _through(proxy, monkeypatch):
        load = _replace(warehouse, uri)
    assert load.rows == N
    assert sum(1 for method, path, body in proxy.received if is_load(method, path, body)) == 2
    assert proxy.count("GET", f"/jobs/{job_ids[0]}") >= 1  # fetched, not started again
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): N}
    assert _replace(warehouse, uri).rows == N  # a rerun replaces it: still one slice


def test_swaps_and_statistics_send_every_value_as_a_query_parameter(gcp_emulators, gcp_env, tmp_path, monkeypatch):
    """What production sends, as the proxy in front of it sees it: the swap and the statistics'
    transaction carry color and month as named query parameters, never in the SQL text. (The
    harness's own proxy, behind, writes them in for the emulator, which takes none in scripts.)"""
    from taxi_assets.assets.analytics_sql import STATS_COLUMNS, STATS_PARTITION

    uri = _publish(tmp_path, gcp_env, ROWS)
    proxy = RewritingProxy(gcp_emulators.bigquery_host)
    warehouse = _warehouse(gcp_env)
    with _through(proxy, monkeypatch):
        assert _replace(warehouse, uri).rows == N
        warehouse.replace_rows(
            "monthly_trip_stats",
            columns=STATS_COLUMNS["bigquery"],
            delete_where=STATS_PARTITION["bigquery"],
            select="SELECT TIMESTAMP(@month), @color, 'Bronx', 1, 1, 1.0, 1.0, 1.0, 0.1, 0",
            params={"color": "yellow", "month": JANUARY},
        )
        stats = warehouse.query(
            f"SELECT trips FROM {warehouse.table_name('monthly_trip_stats')} WHERE {STATS_PARTITION['bigquery']}",
            {"color": "yellow", "month": JANUARY},
        )
    assert list(stats["trips"]) == [1]
    scripts = [
        json.loads(body)["configuration"]["query"]
        for method, path, body in proxy.received
        if _jobs_insert(b"BEGIN TRANSACTION")(method, path, body)
    ]
    assert len(scripts) == 2  # the swap, the statistics
    for script in scripts:
        values = {p["name"]: p["parameterValue"]["value"] for p in script["queryParameters"]}
        assert values == {"color": "yellow", "month": "2021-01-01"}
        assert "'yellow'" not in script["query"] and "2021-01-01" not in script["query"]  # no literal
        assert "@color" in script["query"] and "@month" in script["query"]


def test_a_color_with_a_quote_never_reaches_bigquery(gcp_env):
    """Refused before any SQL is written (partition keys are refused earlier still:
    test_partitions.test_crafted_keys_are_refused)."""
    with pytest.raises(ValueError, match="unknown color"):
        _warehouse(gcp_env).replace_slice(
            source_uri=f"gs://{gcp_env['bucket']}/{KEY}",
            color="yellow' OR TRUE --",
            month=JANUARY,
            file_schema=YELLOW,
            fill_passenger_count=True,
        )


def test_has_table_goes_through_the_same_wrapper(gcp_emulators, gcp_env, monkeypatch):
    """Reads too: a persistent 503 on tables.get ends as Unavailable within the bound, not a raw error."""
    proxy = RewritingProxy(
        gcp_emulators.bigquery_host,
        answer=lambda method, path, body: (
            (503, google_error(503, "UNAVAILABLE", "backendError", "Backend Error")) if "/tables/" in path else None
        ),
    )
    started = time.monotonic()
    with _through(proxy, monkeypatch):
        with pytest.raises(Unavailable, match=r"BigQuery could not read table .*zones \(backendError\)"):
            _warehouse(gcp_env).has_table("zones")
    assert time.monotonic() - started < DEADLINE + SLACK


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
    assert _replace(warehouse, uri).rows == N
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
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): N}
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
