"""The whole graph on the gcp target through the real google-cloud-storage and google-cloud-bigquery clients,
against local emulators: same assets, same partitions, resources chosen by TAXI_TARGET."""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets_tests.helpers import (
    build_test_defs,
    month,
    published_key,
    real_rows,
    run_partition,
    step_failure_messages,
)

SOURCES = {
    "yellow|2021-01-01": real_rows("yellow_tripdata_2021-01_head3000.csv"),
    "yellow|2020-07-01": real_rows("yellow_tripdata_2020-07_sample266.csv"),
    "green|2020-10-01": real_rows("green_tripdata_2020-10_head3000.csv")
    + real_rows("green_tripdata_2020-10_tail500.csv")[1:],
    "green|2019-01-01": real_rows("green_tripdata_2020-10_tail500.csv"),  # same layout, another month
}


def _bq(gcp_emulators):
    return bigquery.Client(
        project=gcp_emulators.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcp_emulators.bigquery_host},
    )


def _slices(gcp_emulators, env):
    rides = f"`{env['project']}.{env['dataset']}.rides`"
    sql = f"SELECT color, FORMAT_DATE('%Y-%m', month) AS ym, COUNT(*) AS n FROM {rides} GROUP BY color, ym"
    return {(row["color"], row["ym"]): row["n"] for row in _bq(gcp_emulators).query(sql).result()}


def _publish(mirror, keys):
    for key in keys:
        m = month(key)
        mirror.publish(m.color, m.ym, SOURCES[key])


@pytest.fixture
def gcp_defs(gcp_env, mirror):
    return build_test_defs("gcp", mirror)


def test_whole_graph_on_gcp_exact_counts_and_rerun(gcp_emulators, gcp_env, gcp_defs, mirror, instance):
    _publish(mirror, SOURCES)
    for key in SOURCES:
        result = run_partition(gcp_defs, key, instance)
        assert result.success, step_failure_messages(result)
        # clean_trips parsed the file raw_trips had just uploaded from local disk: no second transfer.
        [clean] = result.asset_materializations_for_node("clean_trips")
        assert clean.metadata["raw_file_downloaded"].value is False

    expected = {(month(k).color, month(k).ym): len(v) - 1 for k, v in SOURCES.items()}
    assert expected == {
        ("yellow", "2021-01"): 3000,
        ("yellow", "2020-07"): 266,
        ("green", "2020-10"): 3500,
        ("green", "2019-01"): 500,
    }
    assert _slices(gcp_emulators, gcp_env) == expected

    bucket = storage.Client(project=gcp_env["project"]).bucket(gcp_env["bucket"])
    names = {blob.name for blob in bucket.list_blobs()}
    assert "staging/clean_trips/green/green_tripdata_2020-10.parquet" in names
    assert "data/green/green_tripdata_2020-10.parquet" in names
    assert "raw/yellow/yellow_tripdata_2021-01.csv.gz" in names

    # Rerun: the slice is replaced, not doubled; the others are untouched.
    result = run_partition(gcp_defs, "green|2020-10-01", instance)
    assert result.success
    assert _slices(gcp_emulators, gcp_env) == expected
    [published] = result.asset_materializations_for_node("gcs_parquet")
    assert published.metadata["uri"].value == f"gs://{gcp_env['bucket']}/{published_key(month('green|2020-10-01'))}"
    for key in ("generation", "md5", "crc32c", "size_bytes"):
        assert published.metadata[key].value, key
    # The rerun kept the unchanged raw file, so this time clean_trips downloaded it from the bucket.
    [clean] = result.asset_materializations_for_node("clean_trips")
    assert clean.metadata["raw_file_downloaded"].value is True
    [table] = result.asset_materializations_for_node("bq_rides_table")
    assert table.metadata["dagster/row_count"].value == 3500
    assert table.metadata["passenger_count_filled_with_0"].value == 500

    client = _bq(gcp_emulators)
    rides = client.get_table(f"{gcp_env['project']}.{gcp_env['dataset']}.rides")
    assert rides.time_partitioning.type_ == "MONTH" and rides.time_partitioning.field == "month"
    assert rides.clustering_fields == ["color"]
    assert client.get_dataset(f"{gcp_env['project']}.{gcp_env['dataset']}").location == "US"
    leftovers = [t.table_id for t in client.list_tables(gcp_env["dataset"]) if t.table_id.startswith("_staging")]
    assert leftovers == []


def test_location_preflight_fails_before_loading(gcp_emulators, gcp_env, mirror, instance, monkeypatch):
    monkeypatch.setenv("BQ_LOCATION", "asia-northeast3")  # the emulator's buckets are all in US
    defs = build_test_defs("gcp", mirror)
    _publish(mirror, ["yellow|2020-07-01"])
    result = run_partition(defs, "yellow|2020-07-01", instance)
    assert not result.success
    message = "\n".join(step_failure_messages(result))
    assert f"gs://{gcp_env['bucket']} (location US)" in message
    assert "(location asia-northeast3)" in message
    assert "Cannot read and write in different locations" in message and "BQ_LOCATION=US" in message
    client = _bq(gcp_emulators)
    assert client.get_dataset(f"{gcp_env['project']}.{gcp_env['dataset']}").location == "asia-northeast3"
    assert [t.table_id for t in client.list_tables(gcp_env["dataset"])] == []


def _one_partition_behind(proxy, host_variable, config, mirror, instance, monkeypatch):
    """yellow 2020-07 run with one emulator reached through `proxy` (its host in `host_variable`)
    and `config` ({resource: config}) in the run's config."""
    _publish(mirror, ["yellow|2020-07-01"])
    with proxy.running() as url:
        monkeypatch.setenv(host_variable, url)
        resources = {name: {"config": values} for name, values in config.items()}
        return run_partition(
            build_test_defs("gcp", mirror), "yellow|2020-07-01", instance, run_config={"resources": resources}
        )


@pytest.mark.parametrize("refusal", ["503 backendError", "403 quotaExceeded"])
def test_an_outage_is_retried_by_dagster_and_a_quota_is_not(
    gcp_emulators, gcp_env, mirror, instance, monkeypatch, refusal
):
    """Every load job refused, through a proxy in front of the BigQuery emulator, with short bounds
    set in run config: a 503 that outlasts the library's retries fails bq_rides_table as retryable,
    and Dagster's retry policy runs the step again (3 attempts in all); quotaExceeded fails it once,
    after one request, with no step retry."""
    from taxi_assets_tests.emulators import RewritingProxy, google_error

    status, state, reason = {
        "503 backendError": (503, "UNAVAILABLE", "backendError"),
        "403 quotaExceeded": (403, "PERMISSION_DENIED", "quotaExceeded"),
    }[refusal]
    payload = google_error(status, state, reason, f"{reason}: injected for every load job")

    def is_load(method, path, body):
        return method == "POST" and path.split("?")[0].endswith("/jobs") and b'"load"' in (body or b"")

    proxy = RewritingProxy(gcp_emulators.bigquery_host, answer=lambda *r: (status, payload) if is_load(*r) else None)
    bounds = {"dataset": {"env": "BQ_DATASET"}, "call_deadline_seconds": 1.0, "first_pause_seconds": 0.05}
    result = _one_partition_behind(
        proxy, "BIGQUERY_EMULATOR_HOST", {"warehouse": bounds}, mirror, instance, monkeypatch
    )
    assert not result.success
    attempts = 1 + sum(
        1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == "bq_rides_table"
    )
    loads = sum(1 for method, path, body in proxy.received if is_load(method, path, body))
    message = "\n".join(step_failure_messages(result))
    if reason == "quotaExceeded":
        assert attempts == 1 and loads == 1
        assert "a quota is used up (quotaExceeded)" in message and "injected for every load job" in message
    else:
        assert attempts == 3 and loads >= 3 * 3  # each attempt retried the call several times
        assert "BigQuery could not load" in message and "(backendError)" in message


def _fake_key(emulator_adc) -> tuple[str, str]:
    """A key that works against the emulators (its tokens come from a loopback endpoint), and a
    piece of its private key to search for."""
    key = emulator_adc.read_text()
    return key, json.loads(key)["private_key"].splitlines()[5][:48]


@pytest.mark.parametrize("given_as", ["GCP_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_a_service_account_key_appears_nowhere_dagster_keeps_or_prints(
    gcp_env, emulator_adc, mirror, tmp_path, given_as
):
    """A fake key, given the two ways users give one. Two CLI runs (one that succeeds, one that
    fails on a missing bucket, so exceptions are recorded too), then every byte of DAGSTER_HOME
    (event log, run config, metadata, captured compute logs) and everything printed is searched."""
    key, secret = _fake_key(emulator_adc)
    encoded = base64.b64encode(key.encode()).decode()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS")
    if given_as == "GCP_CREDENTIALS":
        env["GCP_CREDENTIALS"] = encoded
    else:
        (tmp_path / "key.json").write_text(key)
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "key.json")
    (tmp_path / "home").mkdir()
    _publish(mirror, ["yellow|2020-07-01"])
    printed = ""
    for bucket, succeeds in ((gcp_env["bucket"], True), ("no-such-bucket", False)):
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
        command += ["--select", "*bq_rides_table", "--partition", "yellow|2020-07-01"]
        done = subprocess.run(command, env={**env, "GCS_BUCKET": bucket}, capture_output=True, text=True, timeout=300)
        assert (done.returncode == 0) is succeeds, done.stderr[-3000:]
        printed += done.stdout + done.stderr
    assert "does not exist (GCS_BUCKET)" in printed  # the failure was recorded, with its exception
    kept = b"".join(p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file())
    assert b"RUN_SUCCESS" in kept or b"ASSET_MATERIALIZATION" in kept  # the search covers real records
    for needle in (secret, encoded[:40], encoded[-40:]):
        assert needle not in printed
        assert needle.encode() not in kept


def test_missing_bucket_fails_at_once_with_the_fix(gcp_emulators, gcp_env, mirror, instance, monkeypatch):
    monkeypatch.setenv("GCS_BUCKET", "no-such-bucket")
    defs = build_test_defs("gcp", mirror)
    _publish(mirror, ["yellow|2020-07-01"])
    result = run_partition(defs, "yellow|2020-07-01", instance)
    assert not result.success
    message = "\n".join(step_failure_messages(result))
    assert "partition yellow|2020-07-01" in message
    assert "GCS bucket gs://no-such-bucket does not exist (GCS_BUCKET)" in message
    assert "Exceeded max_retries" not in message  # failed at once, not after the outage retries


def test_zones_stats_and_chart_written_by_the_warehouse(gcp_emulators, gcp_env, gcp_defs, mirror, instance):
    _publish(mirror, ["green|2020-10-01", "yellow|2020-07-01"])
    mirror.publish_zones()
    for key in ("green|2020-10-01", "yellow|2020-07-01"):
        assert run_partition(gcp_defs, key, instance).success
    everything = gcp_defs.resolve_implicit_global_asset_job_def()
    zones = everything.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(["taxi", "zones"])])
    assert zones.success
    for key in ("green|2020-10-01", "yellow|2020-07-01", "green|2020-10-01"):  # one partition twice
        stats = everything.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("monthly_trip_stats")], partition_key=key
        )
        assert stats.success, step_failure_messages(stats)
        checks = {e.check_name: e.passed for e in stats.get_asset_check_evaluations()}
        assert checks["trips_add_up_to_the_slice"]
    chart = everything.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("trips_per_month_chart")])
    assert chart.success, step_failure_messages(chart)

    client = _bq(gcp_emulators)
    dataset = f"{gcp_env['project']}.{gcp_env['dataset']}"
    zone_rows = {
        r[0]: (r[1], r[2]) for r in client.query(f"SELECT LOCATIONID, ZONE, SERVICE_ZONE FROM `{dataset}.zones`")
    }
    assert len(zone_rows) == 265 and zone_rows[265] == ("NA", "N/A")
    sql = f"SELECT COLOR, COUNT(*), SUM(TRIPS) FROM `{dataset}.monthly_trip_stats` GROUP BY COLOR"
    per_color = {r[0]: (r[1], r[2]) for r in client.query(sql).result()}
    assert per_color["green"][1] == 3500 and per_color["yellow"][1] == 266  # the rerun replaced, not doubled
    bucket = storage.Client(project=gcp_env["project"]).bucket(gcp_env["bucket"])
    blob = bucket.get_blob("reports/trips_per_month.png")
    assert blob is not None and blob.download_as_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _HeldTokenEndpoint:
    """An OAuth token endpoint on loopback that notes who asks (the JWT's `iss`, the service
    account whose private key signed it) and holds its answer until released: a run waiting on it
    is in the middle of storing a table, credentials made, the key in use."""

    def __init__(self):
        import http.server
        import threading

        self.asked = threading.Event()
        self.release = threading.Event()
        self.issuers: list[str] = []
        endpoint = self

        class Token(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                from urllib.parse import parse_qs

                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                claims = form["assertion"][0].split(".")[1]
                endpoint.issuers.append(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["iss"])
                endpoint.asked.set()
                endpoint.release.wait(120)
                body = json.dumps({"access_token": "t", "token_type": "Bearer", "expires_in": 3600}).encode()
                with contextlib.suppress(OSError):  # the asker was killed meanwhile
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Token)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _files_holding(root, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path))
        except OSError:
            pass
    return found


def test_a_run_killed_while_storing_a_table_leaves_no_key_file(gcp_env, mirror, tmp_path):
    """GCP_CREDENTIALS (wrapped, as GNU base64 prints it) on the gcp target, nothing else to go
    by. `taxi/zones` is materialized from the CLI in a process group of its own; while the
    warehouse resource loads the table (`BigQueryWarehouse.replace_table`), its BigQuery client asks
    the token endpoint for a token, signed with the key (so the key reached it, in memory); then the
    whole group is killed with SIGKILL.
    No file under the run's temp folder, DAGSTER_HOME or work folder holds the private key, during
    the run or after the kill (dagster-gcp's setup_gcp_creds kept one for the whole run)."""
    from taxi_assets_tests.emulators import service_account_key

    email = "killed-run@taxi-test.iam.gserviceaccount.com"
    token = _HeldTokenEndpoint()
    key = service_account_key(email, token.url, project=gcp_env["project"])
    needle = json.dumps(json.loads(key)["private_key"].splitlines()[5])[1:-1].encode()  # as a JSON dump has it
    mirror.publish_zones()
    for folder in ("tmp", "home"):
        (tmp_path / folder).mkdir()
    env = {
        **os.environ,
        "GCP_CREDENTIALS": base64.encodebytes(key.encode()).decode(),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),  # the temp folder, and with it the gcp target's work folder
    }
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "TAXI_WORK_DIR"):
        env.pop(name, None)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
    command += ["--select", "taxi/zones"]
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not token.asked.wait(0.2):
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never asked for a token"
        assert set(token.issuers) == {email}  # the key's own account: credentials made from the key
        during = _files_holding(tmp_path, needle)
        assert run.poll() is None  # killed mid-run: the table is waiting for its token
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
        token.close()
    assert during == []
    assert _files_holding(tmp_path, needle) == []


@pytest.mark.parametrize("asset, folder", [("raw_trips", "raw"), ("clean_trips", "staging/clean_trips")])
def test_a_lake_outage_while_storing_a_trip_file_is_retried_by_dagster(
    gcp_emulators, gcp_env, mirror, instance, monkeypatch, asset, folder
):
    """Every upload of the step's file refused with 503 for 1.5 s, through a proxy in front of the GCS
    emulator, with the lake's bounds set short in run config: the library gives up after 1 s, the
    step fails as retryable, and Dagster's retry policy stores the file on a later attempt; one
    object, the whole partition lands."""
    from taxi_assets_tests.emulators import RewritingProxy, google_error

    payload = google_error(503, "UNAVAILABLE", "backendError", "backendError: injected for 1.5 s")
    refusals: list[float] = []  # when each refused upload came

    def refuse_for_a_while(method, path, body):
        if not (method == "POST" and path.startswith("/upload/") and f'"name": "{folder}/'.encode() in (body or b"")):
            return None
        if refusals and time.monotonic() - refusals[0] >= 1.5:
            return None
        refusals.append(time.monotonic())
        return 503, payload

    proxy = RewritingProxy(gcp_emulators.storage_host, answer=refuse_for_a_while)
    bounds = {"call_deadline_seconds": 1.0, "first_pause_seconds": 0.05}  # for the IO manager's lake too
    result = _one_partition_behind(proxy, "STORAGE_EMULATOR_HOST", {"lake": bounds}, mirror, instance, monkeypatch)
    assert result.success, step_failure_messages(result)
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == asset]
    assert len(retries) >= 1
    assert len(refusals) >= 3  # the library retried within its bound before the step gave up
    assert _slices(gcp_emulators, gcp_env) == {("yellow", "2020-07"): 266}
    bucket = storage.Client(
        project=gcp_env["project"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcp_emulators.storage_host},
    ).bucket(gcp_env["bucket"])
    assert len([b.name for b in bucket.list_blobs(prefix=f"{folder}/yellow/")]) == 1
