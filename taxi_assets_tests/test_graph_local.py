"""The whole graph on the local target: exact row counts from source to warehouse, reruns that
replace, and bad input that fails clearly and publishes nothing."""

import os

import duckdb
import pyarrow.parquet as pq
import pytest

from taxi_assets_tests.helpers import (
    fhv_month,
    month,
    published_key,
    raw_key,
    real_rows,
    run_partition,
    step_failure_messages,
)

SOURCES = {
    "yellow|2021-01-01": real_rows("yellow_tripdata_2021-01_head3000.csv"),
    "yellow|2020-07-01": real_rows("yellow_tripdata_2020-07_sample266.csv"),
    "fhv|2019-01-01": fhv_month("2019-01"),
    "fhv|2019-02-01": fhv_month("2019-02"),
}


def _publish_all(mirror):
    for key, lines in SOURCES.items():
        m = month(key)
        mirror.publish(m.color, m.ym, lines)


def _slices(data_dir):
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    return {(color, ym): n for color, ym, n in rows}


def _lake_rows(data_dir, key):
    return pq.read_metadata(data_dir / "lake" / published_key(month(key))).num_rows


def test_two_colors_two_months_exact_counts_and_idempotent_rerun(mirror, local_env, local_defs, instance):
    _publish_all(mirror)
    for key in SOURCES:
        result = run_partition(local_defs, key, instance)
        assert result.success, step_failure_messages(result)

    expected = {(month(k).color, month(k).ym): len(lines) - 1 for k, lines in SOURCES.items()}
    assert expected == {
        ("yellow", "2021-01"): 3000,
        ("yellow", "2020-07"): 266,
        ("fhv", "2019-01"): 18,
        ("fhv", "2019-02"): 16,
    }
    assert _slices(local_env) == expected
    for key, lines in SOURCES.items():
        assert _lake_rows(local_env, key) == len(lines) - 1

    # A rerun replaces its slice: same count, nothing doubled, other slices untouched.
    result = run_partition(local_defs, "yellow|2020-07-01", instance)
    assert result.success
    assert _slices(local_env) == expected

    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        months = conn.execute(
            "SELECT DISTINCT strftime(month, '%Y-%m') FROM rides "
            "WHERE color = 'yellow' AND pickup_datetime < '2020-07-01'"
        ).fetchall()
        # The month comes from the partition, not the pickup: June pickups stay in July's slice.
        assert months == [("2020-07",)]
        nulls = conn.execute("SELECT count(*) FROM rides WHERE color = 'fhv' AND passenger_count IS NULL").fetchone()[0]
        assert nulls == 34  # fhv has no passenger_count: NULL, not 0


def test_materialization_metadata(mirror, local_env, local_defs, instance):
    _publish_all(mirror)
    result = run_partition(local_defs, "yellow|2020-07-01", instance)
    assert result.success
    by_asset = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("clean_trips")}
    clean = by_asset["clean_trips"]
    assert clean["dagster/row_count"].value == 266
    assert clean["pickups_outside_month"].value == 5
    assert [c.name for c in clean["dagster/column_schema"].schema.columns][:3] == [
        "VendorID",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
    ]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["has_rows"].passed and checks["matches_pinned_schema"].passed
    assert not checks["pickups_within_month"].passed
    assert checks["pickups_within_month"].metadata["pickups_outside_month"].value == 5
    assert checks["slice_matches_lake_file"].passed
    [raw] = result.asset_materializations_for_node("raw_trips")
    assert raw.metadata["source_url"].value.endswith("/yellow/yellow_tripdata_2020-07.csv.gz")
    assert len(raw.metadata["sha256"].value) == 64
    [table] = result.asset_materializations_for_node("bq_rides_table")
    assert table.metadata["dagster/row_count"].value == 266
    assert table.metadata["passenger_count_filled_with_0"].value == 0


def test_missing_passenger_counts_become_zero_in_the_warehouse_only(mirror, local_env, local_defs, instance):
    head = real_rows("green_tripdata_2020-10_head3000.csv")
    tail = real_rows("green_tripdata_2020-10_tail500.csv")[1:]
    mirror.publish("green", "2020-10", head + tail)
    result = run_partition(local_defs, "green|2020-10-01", instance)
    assert result.success
    [table] = result.asset_materializations_for_node("bq_rides_table")
    assert table.metadata["passenger_count_filled_with_0"].value == 500
    lake = pq.read_table(local_env / "lake" / published_key(month("green|2020-10-01")))
    assert lake.column("passenger_count").null_count == 500
    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rides WHERE passenger_count IS NULL").fetchone()[0] == 0

    unfilled = run_partition(
        local_defs,
        "green|2020-10-01",
        instance,
        run_config={"ops": {"bq_rides_table": {"config": {"fill_passenger_count": False}}}},
    )
    assert unfilled.success
    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rides WHERE passenger_count IS NULL").fetchone()[0] == 500
        assert conn.execute("SELECT count(*) FROM rides").fetchone()[0] == 3500


def _assert_nothing_published(data_dir, key):
    assert not (data_dir / "lake" / published_key(month(key))).exists()
    if (data_dir / "warehouse.duckdb").exists():
        assert (month(key).color, month(key).ym) not in _slices(data_dir)


def test_month_not_published_upstream_fails_at_once(mirror, local_env, local_defs, instance):
    result = run_partition(local_defs, "green|2021-07-01", instance)
    assert not result.success
    [message] = step_failure_messages(result)
    assert "partition green|2021-07-01" in message
    assert "green_tripdata_2021-07.csv.gz: not published upstream (HTTP 404)" in message
    assert len(mirror.requests) == 1  # no retries on 404
    assert not (local_env / "lake" / raw_key(month("green|2021-07-01"))).exists()
    _assert_nothing_published(local_env, "green|2021-07-01")


def test_truncated_gzip_fails_and_stores_nothing(mirror, local_env, local_defs, instance):
    whole = gzip_bytes(real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("yellow", "2021-01", whole[:-3000])
    result = run_partition(local_defs, "yellow|2021-01-01", instance)
    assert not result.success
    [message] = step_failure_messages(result)
    assert "partition yellow|2021-01-01" in message and "yellow_tripdata_2021-01.csv.gz" in message
    assert "truncated gzip" in message and "gave up after 6 attempts" in message
    assert mirror.requests.count("GET /yellow/yellow_tripdata_2021-01.csv.gz") == 6  # in-run retries, no run retry
    assert not (local_env / "lake" / raw_key(month("yellow|2021-01-01"))).exists()
    _assert_nothing_published(local_env, "yellow|2021-01-01")


def test_wrong_header_fails_and_keeps_the_previous_good_version(mirror, local_env, local_defs, instance):
    key = "yellow|2020-07-01"
    mirror.publish("yellow", "2020-07", SOURCES[key])
    assert run_partition(local_defs, key, instance).success
    published = local_env / "lake" / published_key(month(key))
    before = published.read_bytes()

    # Upstream replaces the file with one of the wrong layout.
    mirror.publish("yellow", "2020-07", real_rows("green_tripdata_2020-10_head3000.csv"))
    result = run_partition(local_defs, key, instance)
    assert not result.success
    [message] = step_failure_messages(result)
    assert f"partition {key}" in message and "raw/yellow/yellow_tripdata_2020-07.csv.gz" in message
    assert "wrong header" in message and "lpep_pickup_datetime" in message
    assert published.read_bytes() == before
    assert _slices(local_env) == {("yellow", "2020-07"): 266}


def test_empty_month_fails_the_blocking_check_and_publishes_nothing(mirror, local_env, local_defs, instance):
    mirror.publish("fhv", "2019-03", fhv_month("2019-03")[:1])  # header only
    result = run_partition(local_defs, "fhv|2019-03-01", instance)
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["has_rows"].passed
    _assert_nothing_published(local_env, "fhv|2019-03-01")


def gzip_bytes(lines):
    import gzip

    return gzip.compress("".join(lines).encode())


@pytest.mark.parametrize("key", ["yellow|2021-01-01"])
def test_transient_5xx_inside_a_run_is_retried(mirror, local_env, local_defs, instance, key):
    mirror.publish("yellow", "2021-01", SOURCES[key])
    mirror.fail_next("yellow", "2021-01", "502", "cut")
    result = run_partition(local_defs, key, instance)
    assert result.success
    [raw] = result.asset_materializations_for_node("raw_trips")
    assert raw.metadata["download_attempts"].value == 3
    assert _slices(local_env) == {("yellow", "2021-01"): 3000}


def test_unchanged_upstream_file_is_not_downloaded_again(mirror, local_env, local_defs, instance):
    key = "yellow|2020-07-01"
    mirror.publish("yellow", "2020-07", SOURCES[key])
    assert run_partition(local_defs, key, instance).success
    mirror.requests.clear()

    rerun = run_partition(local_defs, key, instance)
    assert rerun.success
    [raw] = rerun.asset_materializations_for_node("raw_trips")
    assert raw.metadata["download_skipped"].value is True
    assert mirror.requests == ["HEAD /yellow/yellow_tripdata_2020-07.csv.gz"]
    assert _slices(local_env) == {("yellow", "2020-07"): 266}

    forced = run_partition(
        local_defs, key, instance, run_config={"ops": {"raw_trips": {"config": {"force_download": True}}}}
    )
    [raw] = forced.asset_materializations_for_node("raw_trips")
    assert raw.metadata["download_skipped"].value is False

    # A new upstream version (another size and time) is downloaded.
    mirror.publish("yellow", "2020-07", SOURCES[key][:101])
    os.utime(mirror.path("yellow", "2020-07"), (10**9, 10**9))
    changed = run_partition(local_defs, key, instance)
    [raw] = changed.asset_materializations_for_node("raw_trips")
    assert raw.metadata["download_skipped"].value is False
    assert _slices(local_env) == {("yellow", "2020-07"): 100}


def _quarantine(max_fraction: float = 0.001) -> dict:
    config = {"on_bad_rows": "quarantine", "max_rejected_fraction": max_fraction}
    return {"ops": {"clean_trips": {"config": config}}}


def test_quarantine_keeps_the_good_rows_and_sets_the_bad_ones_aside(mirror, local_env, local_defs, instance):
    import csv
    import gzip

    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")
    lines[1234] = lines[1234].replace(",N,", ",N,extra,", 1)  # one field too many
    mirror.publish("yellow", "2021-01", lines)
    key = "yellow|2021-01-01"
    assert not run_partition(local_defs, key, instance).success  # the default: one bad row fails the month

    result = run_partition(local_defs, key, instance, run_config=_quarantine())
    assert result.success, step_failure_messages(result)
    [clean] = result.asset_materializations_for_node("clean_trips")
    assert clean.metadata["rows_rejected"].value == 1
    rejected = local_env / "lake" / "rejected" / "yellow" / "yellow_tripdata_2021-01.csv.gz"
    assert clean.metadata["rejected_uri"].value == str(rejected)
    with gzip.open(rejected, "rt") as f:
        [row] = list(csv.DictReader(f))
    assert (row["line"], row["reason"], row["text"]) == (
        "1235",
        "expected 18 fields, found 19",
        lines[1234].rstrip("\n"),
    )
    assert _slices(local_env) == {("yellow", "2021-01"): 2999}  # source lines = lake rows + rejected rows
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_rows_rejected")
    assert not check.passed and check.severity.value == "WARN"

    # Above the allowed share, the check is an error and blocks publishing: the good version stays.
    strict = run_partition(local_defs, key, instance, run_config=_quarantine(max_fraction=0.0001))
    check = next(e for e in strict.get_asset_check_evaluations() if e.check_name == "no_rows_rejected")
    assert not check.passed and check.severity.value == "ERROR"
    assert not strict.asset_materializations_for_node("bq_rides_table")

    # A fixed file: the rejected lines of the old version go with it.
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    os.utime(mirror.path("yellow", "2021-01"), (10**9, 10**9))
    assert run_partition(local_defs, key, instance, run_config=_quarantine()).success
    assert not rejected.exists()
    assert _slices(local_env) == {("yellow", "2021-01"): 3000}


def test_upstream_text_is_inert_in_the_ui_and_in_spreadsheets(mirror, local_env, local_defs, instance):
    """A cell that is an image is shown as text in the UI's preview (the viewer's browser fetches
    nothing); a quarantined line that starts like a formula gets a leading ' in the rejected file."""
    import csv
    import gzip

    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")
    lines[1] = lines[1].replace(",N,", ",![px](http://127.0.0.1:9/pixel.png),", 1)  # the preview's first row
    lines[1234] = '=HYPERLINK("http://127.0.0.1:9/"),1\n'  # a bad line, shaped as a formula
    mirror.publish("yellow", "2021-01", lines)
    result = run_partition(local_defs, "yellow|2021-01-01", instance, run_config=_quarantine())
    assert result.success, step_failure_messages(result)
    [clean] = result.asset_materializations_for_node("clean_trips")
    preview = clean.metadata["preview"].value
    assert "\\!\\[px\\]\\(http\\://127.0.0.1\\:9/pixel.png\\)" in preview and "![px](" not in preview
    with gzip.open(local_env / "lake" / "rejected" / "yellow" / "yellow_tripdata_2021-01.csv.gz", "rt") as f:
        [row] = list(csv.DictReader(f))
    assert row["line"] == "1235" and row["text"] == "'" + lines[1234].rstrip("\n")


def test_a_share_that_is_not_a_share_is_refused_naming_the_setting(mirror, local_defs, instance):
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    result = run_partition(local_defs, "yellow|2021-01-01", instance, run_config=_quarantine(float("nan")))
    assert not result.success
    [message] = step_failure_messages(result)
    assert "config max_rejected_fraction must be a share from 0 to 1, got nan" in message
    assert not result.asset_materializations_for_node("gcs_parquet")


@pytest.mark.parametrize(
    "base_url",
    [
        "http://alice:TOPSECRET-4711@127.0.0.1:65536/releases",  # not a port: requests' InvalidURL
        "http://alice:TOPSECRET-4711@127.0.0.1:9/releases",  # nothing listens: a connection refused
    ],
    ids=["invalid-url", "refused"],
)
def test_credentials_in_the_source_url_appear_nowhere_dagster_keeps_or_prints(tmp_path, base_url):
    """A CLI run against a URL with credentials that fails: every byte of DAGSTER_HOME (event log,
    compute logs) and everything printed is searched for the password."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "TAXI_DATA_DIR": str(tmp_path / "data")}
    env["TAXI_SOURCE_URL"] = base_url
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
    command += ["--select", "raw_trips", "--partition", "yellow|2020-07-01"]
    command += ["--config-json", '{"resources": {"upstream_files": {"config": {"attempts": 1}}}}']
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    printed = done.stdout + done.stderr
    assert "http://***@127.0.0.1:" in printed  # the failure is there, with the URL redacted
    kept = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"STEP_FAILURE" in kept  # the search covers the recorded failure
    assert "TOPSECRET" not in printed and b"TOPSECRET" not in kept
