"""The whole graph on the gcp target through the real google-cloud-storage and google-cloud-bigquery clients,
against local emulators: same assets, same partitions, resources chosen by TAXI_TARGET."""

import base64
import json

import dagster as dg
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.layout import published_key
from taxi_assets_tests.conftest import (
    build_test_defs,
    month,
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


def test_service_account_key_never_reaches_the_event_log(gcp_emulators, gcp_env, mirror, instance, monkeypatch, capfd):
    secret = "FAKE-PRIVATE-KEY-MATERIAL-0123456789"
    key = {
        "type": "service_account",
        "project_id": gcp_env["project"],
        "private_key_id": "abc123",
        "private_key": f"-----BEGIN PRIVATE KEY-----\\n{secret}\\n-----END PRIVATE KEY-----\\n",
        "client_email": "taxi@taxi-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    encoded = base64.b64encode(json.dumps(key).encode()).decode()
    monkeypatch.setenv("GCP_CREDENTIALS", encoded)
    defs = build_test_defs("gcp", mirror)
    _publish(mirror, ["yellow|2020-07-01"])
    result = run_partition(defs, "yellow|2020-07-01", instance)
    assert result.success, step_failure_messages(result)

    run = instance.get_run_by_id(result.run_id)
    stored = dg.serialize_value(run) + "".join(dg.serialize_value(e) for e in instance.all_logs(result.run_id))
    printed = "".join(capfd.readouterr())
    for text in (stored, printed):
        assert secret not in text
        assert encoded not in text and encoded[:40] not in text


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
