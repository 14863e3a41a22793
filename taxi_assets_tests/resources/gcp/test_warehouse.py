"""BigQueryWarehouse through the real client against bqemulator: the slice swap, its atomicity
under a server-side failure, the location rules and what a 403 says."""

import datetime as dt
import gzip
import http.server
import json

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.cleaning import clean_trip_file
from taxi_assets.mirror import serve_folder
from taxi_assets.resources.errors import AccessDenied, SetupError
from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource
from taxi_assets.resources.gcp.warehouse import BigQueryWarehouse, bucket_loadable_into
from taxi_assets.schema import RELEASES_SCHEMAS
from taxi_assets_tests.emulators import RewritingProxy
from taxi_assets_tests.helpers import real_rows

JANUARY = dt.date(2021, 1, 1)
KEY = "data/yellow/yellow_tripdata_2021-01.parquet"
YELLOW = RELEASES_SCHEMAS["yellow"]


@pytest.mark.parametrize(
    "bucket, dataset, verdict",
    [
        # Certain: the same location, a US dataset (loads from anywhere), a listed EU region into EU.
        ("asia-northeast3", "asia-northeast3", True),
        ("EU", "EU", True),
        ("eu", "EU", True),
        ("us-central1", "US", True),
        ("ASIA", "US", True),
        ("EUR4", "US", True),
        ("europe-west1", "EU", True),
        ("europe-central2", "EU", True),
        # Certainly refused: two different regions; into EU, a region outside Europe or the US/ASIA
        # multi-regions.
        ("us-east1", "us-central1", False),
        ("europe-west1", "europe-west4", False),
        ("us-central1", "EU", False),
        ("US", "EU", False),
        ("ASIA", "EU", False),
        ("US", "asia-northeast3", False),
        ("EU", "us-central1", False),
        # Not certain (warned about, the load job has the last word): a multi-region name that may be
        # a configurable dual-region holding the dataset's region, a predefined dual-region, a
        # European region the list does not have (europe-north2), London and Zurich.
        ("ASIA", "asia-northeast3", None),
        ("US", "us-central1", None),
        ("ASIA1", "asia-northeast1", None),
        ("EUR4", "EU", None),
        ("EUR5", "EU", None),
        ("europe-north2", "EU", None),
        ("europe-west2", "EU", None),
    ],
)
def test_bucket_location_rules(bucket, dataset, verdict):
    assert bucket_loadable_into(bucket, dataset) is verdict


def _publish(tmp_path, env, lines) -> str:
    """A published yellow month in the GCS emulator, as gcs_parquet leaves it."""
    raw, out = tmp_path / "raw.csv.gz", tmp_path / "clean.parquet"
    raw.write_bytes(gzip.compress("".join(lines).encode()))
    clean_trip_file(
        raw, out, color="yellow", schema=YELLOW, month_start=JANUARY, month_end=dt.date(2021, 2, 1), file_label="t"
    )
    storage.Client(project=env["project"]).bucket(env["bucket"]).blob(KEY).upload_from_filename(str(out))
    return f"gs://{env['bucket']}/{KEY}"


def _warehouse(env) -> BigQueryWarehouse:
    return BigQueryWarehouse(
        bigquery=TaxiBigQueryResource(project=env["project"]),
        gcs=TaxiGCSResource(project=env["project"]),
        dataset=env["dataset"],
    )


def _inject_error_after_delete(body: bytes) -> bytes:
    marker = b"INSERT INTO"
    if b"BEGIN TRANSACTION" not in body or marker not in body:
        return body
    return body.replace(marker, b"SELECT ERROR('injected failure between delete and insert');\\n" + marker, 1)


def test_a_failure_inside_the_swap_leaves_the_old_slice(gcp_emulators, gcp_env, tmp_path, monkeypatch):
    rows = real_rows("yellow_tripdata_2021-01_head3000.csv")
    warehouse = _warehouse(gcp_env)
    uri = _publish(tmp_path, gcp_env, rows)

    def replace():
        return warehouse.replace_slice(
            source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
        )

    assert replace().rows == 3000

    _publish(tmp_path, gcp_env, rows[:101])  # upstream changed; this time the transaction fails after its DELETE
    proxy = RewritingProxy(gcp_emulators.bigquery_host, _inject_error_after_delete)
    with proxy.running() as url:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", url)
        with pytest.raises(Exception, match="injected failure between delete and insert"):
            replace()
    assert proxy.rewritten == 1
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", gcp_emulators.bigquery_host)
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): 3000}

    assert replace().rows == 100
    assert warehouse.slice_row_counts() == {("yellow", JANUARY): 100}


def test_a_swap_aborted_by_a_concurrent_transaction_is_retried(gcp_emulators, gcp_env, tmp_path, monkeypatch, caplog):
    """Real BigQuery aborts a transaction on a table that another transaction is mutating; the
    emulator does not, so a proxy makes the first swap fail with BigQuery's message."""
    uri = _publish(tmp_path, gcp_env, real_rows("yellow_tripdata_2021-01_head3000.csv"))
    aborted = []

    def abort_first_swap(body: bytes) -> bytes:
        if b"BEGIN TRANSACTION" not in body or aborted:
            return body
        aborted.append(body)
        message = b"Transaction is aborted due to concurrent update against table taxi-test.d.rides"
        return body.replace(b"BEGIN TRANSACTION;", b"BEGIN TRANSACTION; SELECT ERROR('" + message + b"');", 1)

    warehouse = _warehouse(gcp_env).model_copy(update={"swap_backoff_seconds": 0.05})
    with RewritingProxy(gcp_emulators.bigquery_host, abort_first_swap).running() as url:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", url)
        load = warehouse.replace_slice(
            source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
        )
    assert len(aborted) == 1 and load.rows == 3000
    assert "aborted by a concurrent transaction on rides (attempt 1 of 5); retrying" in caplog.text


def test_naive_lake_timestamps_land_as_the_same_wall_clock_times(gcp_emulators, gcp_env, tmp_path):
    """The staging table reads the lake's naive timestamps as DATETIME, as real BigQuery does; the
    swap casts them to rides' TIMESTAMP without shifting them."""
    rows = real_rows("yellow_tripdata_2021-01_head3000.csv")
    uri = _publish(tmp_path, gcp_env, rows)
    _warehouse(gcp_env).replace_slice(
        source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
    )
    client = bigquery.Client(
        project=gcp_env["project"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcp_emulators.bigquery_host},
    )
    table = client.get_table(f"{gcp_env['project']}.{gcp_env['dataset']}.rides")
    assert {f.name: f.field_type for f in table.schema}["pickup_datetime"] == "TIMESTAMP"
    first = rows[1].split(",")[1]  # "2021-01-01 00:30:10", New York wall-clock time
    sql = f"SELECT COUNT(*) FROM `{table.full_table_id.replace(':', '.')}` WHERE pickup_datetime = TIMESTAMP '{first}'"
    assert next(iter(client.query(sql).result()))[0] >= 1


def test_403_names_the_permission_and_identity(monkeypatch, tmp_path):
    """A BigQuery endpoint that refuses everything, as a project without the roles would."""

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _refuse(self):
            body = json.dumps(
                {
                    "error": {
                        "code": 403,
                        "message": "Access Denied: Dataset p:d: Permission bigquery.datasets.get denied",
                        "errors": [{"reason": "accessDenied", "message": "denied"}],
                        "status": "PERMISSION_DENIED",
                    }
                }
            ).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

    with serve_folder(tmp_path, handler=lambda *a, **k: Forbidden(*a)) as url:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", url)
        warehouse = BigQueryWarehouse(
            bigquery=TaxiBigQueryResource(project="p", location="US"), gcs=TaxiGCSResource(project="p"), dataset="d"
        )
        with pytest.raises(AccessDenied) as err:
            warehouse.replace_slice(
                source_uri=f"gs://b/{KEY}", color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
            )
    message = str(err.value)
    assert "HTTP 403" in message and "bigquery.datasets.get" in message
    assert "Application Default Credentials identity" in message
    assert "roles/bigquery.dataEditor" in message and "roles/bigquery.jobUser" in message


def test_an_existing_dataset_in_another_location_fails_naming_both(gcp_emulators, gcp_env, tmp_path, monkeypatch):
    """BQ_LOCATION=US and the dataset exists in EU (e.g. created by hand): every job in US would not
    find it. Refused before any job, naming both; nothing is created."""
    client = bigquery.Client(
        project=gcp_env["project"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcp_emulators.bigquery_host},
    )
    dataset = bigquery.Dataset(f"{gcp_env['project']}.{gcp_env['dataset']}")
    dataset.location = "EU"
    client.create_dataset(dataset)
    uri = _publish(tmp_path, gcp_env, real_rows("yellow_tripdata_2021-01_head3000.csv"))
    with pytest.raises(SetupError) as err:
        _warehouse(gcp_env).replace_slice(
            source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
        )
    assert "is in location EU, but BQ_LOCATION is US" in str(err.value) and "BQ_LOCATION=EU" in str(err.value)
    assert list(client.list_tables(gcp_env["dataset"])) == []


def test_statistics_of_two_partitions_written_at_once_are_each_there_once(gcp_emulators, gcp_env):
    """Two writers of monthly_trip_stats' rows at the same moment (two runs outside the pool: two
    instances, CLI runs), each replacing its own partition three times: every transaction commits
    or is run again, and each partition ends with exactly its last rows."""
    import threading

    from taxi_assets.assets.analytics_sql import STATS_COLUMNS, STATS_OF_PARTITION, STATS_PARTITION

    warehouse = _warehouse(gcp_env)
    select = (
        "SELECT TIMESTAMP(@month), @color, borough, @round, 1, 1.0, 1.0, 1.0, 0.1, 0 "
        "FROM UNNEST(['Bronx', 'Queens']) AS borough"
    )
    errors = []

    def write(color: str) -> None:
        try:
            for round_ in range(1, 4):
                warehouse.replace_rows(
                    "monthly_trip_stats",
                    columns=STATS_COLUMNS["bigquery"],
                    delete_where=STATS_PARTITION["bigquery"],
                    select=select,
                    params={"color": color, "month": JANUARY, "round": round_},
                )
        except Exception as exc:  # reported below, with the thread's color
            errors.append((color, exc))

    threads = [threading.Thread(target=write, args=(color,)) for color in ("yellow", "green")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    stats = warehouse.table_name("monthly_trip_stats")
    for color in ("yellow", "green"):
        rows = warehouse.query(STATS_OF_PARTITION["bigquery"].format(stats=stats), {"color": color, "month": JANUARY})
        assert list(rows["pickup_borough"]) == ["Bronx", "Queens"]  # two rows, not six
        assert set(rows["trips"]) == {3}  # the last round's


def test_an_uncertain_location_pair_warns_and_loads(gcp_emulators, gcp_env, tmp_path, caplog):
    """A bucket reporting US (the emulator's) and a dataset in us-central1: a configurable
    dual-region reports US and may hold us-central1, so the check cannot tell; it warns and lets
    the load job decide (the emulator loads across any locations). The certain refusal is
    test_graph_gcp.test_location_preflight_fails_before_loading."""
    uri = _publish(tmp_path, gcp_env, real_rows("yellow_tripdata_2021-01_head3000.csv"))
    warehouse = BigQueryWarehouse(
        bigquery=TaxiBigQueryResource(project=gcp_env["project"], location="us-central1"),
        gcs=TaxiGCSResource(project=gcp_env["project"]),
        dataset=gcp_env["dataset"],
    )
    load = warehouse.replace_slice(
        source_uri=uri, color="yellow", month=JANUARY, file_schema=YELLOW, fill_passenger_count=True
    )
    assert load.rows == 3000
    assert f"bucket gs://{gcp_env['bucket']} is in US and dataset {gcp_env['dataset']} in us-central1" in caplog.text
    assert "a mismatch is reported by the load job itself" in caplog.text
