"""The production instance as `make serve` runs it: a code server, the webserver and the daemon
against a real PostgreSQL server, fresh each time. The sensor turned on over GraphQL finds the
mirror's files and the daemon runs them; a first backfill of every partitioned asset succeeds with
nothing done by hand; a killed daemon and a killed run worker lose nothing."""

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from taxi_assets_harness.graphql import graphql, max_overlap, runs, wait_until
from taxi_assets_harness.instances import (
    TRIP_ASSETS,
    backfill_runs,
    latest_materialization_ms,
    launch_backfill,
    make_serve,
    partitions_materialized,
    run_worker_pid,
)
from taxi_assets_harness.postgres import postgres_cluster, server_binaries
from taxi_assets_tests.helpers import fhv_month, real_rows
from taxi_assets_tests.stats import STAT_COLUMNS, expected_stats

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
    ),
]
ROOT = Path(__file__).resolve().parents[1]
SENSOR = {
    "repositoryLocationName": "taxi_assets",
    "repositoryName": "__repository__",
    "sensorName": "upstream_files_sensor",
}
FILES = {
    ("yellow", "2021-01"): real_rows("yellow_tripdata_2021-01_head3000.csv"),
    ("yellow", "2020-07"): real_rows("yellow_tripdata_2020-07_sample266.csv"),
    ("green", "2020-10"): real_rows("green_tripdata_2020-10_head3000.csv"),
    ("green", "2019-01"): real_rows("green_tripdata_2020-10_tail500.csv"),
    ("fhv", "2019-01"): fhv_month("2019-01"),
    ("fhv", "2019-02"): fhv_month("2019-02"),
}
MAX_CONCURRENT_RUNS = 4  # deploy/dagster.yaml
YELLOW = real_rows("yellow_tripdata_2021-01_head3000.csv")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def _partition_of(run: dict) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), None)


def _settled(port: int, partitions: int):
    """Every run has finished and the automation sensor is done with what they changed: the
    statistics of every partition, then the chart after them. Returns the runs (at once if one failed)."""
    found = runs(port)
    if any(r["status"] == "FAILURE" for r in found):
        return found
    if (
        any(r["status"] not in FINISHED for r in found)
        or partitions_materialized(port, "monthly_trip_stats") < partitions
    ):
        return None
    chart = latest_materialization_ms(port, "trips_per_month_chart")
    return found if chart is not None and chart >= latest_materialization_ms(port, "monthly_trip_stats") else None


def test_make_serve_runs_what_the_sensor_finds_on_postgres(mirror, tmp_path):
    for (color, ym), lines in FILES.items():
        mirror.publish(color, ym, lines)
    mirror.publish_zones()
    started = time.monotonic()
    with (
        postgres_cluster(tmp_path / "pg") as pg_url,
        make_serve(tmp_path, pg_url, {"TAXI_SOURCE_URL": mirror.base_url}) as port,
    ):
        logs = tmp_path / "home" / "serve-logs"
        status = graphql(
            port,
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
            "... on Sensor { sensorState { status } } ... on PythonError { message } } }",
            {"s": SENSOR},
        )["startSensor"]
        assert status["__typename"] == "Sensor" and status["sensorState"]["status"] == "RUNNING", status

        def all_finished():
            found = runs(port, {"tags": [{"key": "dagster/sensor_name", "value": "upstream_files_sensor"}]})
            done = [r for r in found if r["status"] in FINISHED]
            return found if len(found) == len(FILES) and len(done) == len(found) else None

        finished = wait_until(all_finished, 300, "the sensor's runs", interval=2)
        assert {r["status"] for r in finished} == {"SUCCESS"}, (logs / "daemon.log").read_text()[-3000:]
        tags = [{t["key"]: t["value"] for t in r["tags"]} for r in finished]
        assert {t["dagster/partition"] for t in tags} == {f"{c}|{ym}-01" for c, ym in FILES}
        assert {t["taxi/trigger"] for t in tags} == {"new"}
        overlap = max_overlap(finished)
        assert 1 <= overlap <= MAX_CONCURRENT_RUNS

        # A second tick (the UI's "test sensor", on the code server, with the stored cursor) requests nothing.
        cursor = graphql(
            port,
            "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor "
            "{ sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }",
            {"s": SENSOR},
        )["sensorOrError"]["sensorState"]["typeSpecificData"]["lastCursor"]
        assert cursor
        dry = graphql(
            port,
            "mutation($s: SensorSelector!, $c: String) { sensorDryRun(selectorData: $s, cursor: $c) { __typename "
            "... on DryRunInstigationTick { evaluationResult { runRequests { runKey } skipReason error { message } } } "
            "... on PythonError { message } } }",
            {"s": SENSOR, "c": cursor},
        )["sensorDryRun"]
        assert dry["evaluationResult"]["runRequests"] == [] and dry["evaluationResult"]["error"] is None, dry
        assert "6 published, 0 new or changed" in dry["evaluationResult"]["skipReason"]

        # The automation sensor, on by default, loaded the zones, then each slice's statistics, then the chart.
        settled = wait_until(lambda: _settled(port, len(FILES)), 240, "the automation sensor's runs", interval=2)
        assert {r["status"] for r in settled} == {"SUCCESS"}, (logs / "daemon.log").read_text()[-3000:]

        # Run storage is PostgreSQL, not a SQLite file under DAGSTER_HOME.
        import psycopg2

        with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == len(settled) > len(FILES)
        assert not list((tmp_path / "home").rglob("*.db"))

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert {(c, ym): n for c, ym, n in slices} == {key: len(lines) - 1 for key, lines in FILES.items()}
    print(f"deployment test: {time.monotonic() - started:.0f} s, at most {overlap} runs at once")


def test_a_fresh_deployment_backfills_every_partitioned_asset(mirror, tmp_path):
    """What a new user does first: a fresh `make serve`, then one backfill of every partitioned
    asset (the UI's "Materialize" with the partitioned assets selected), and nothing by hand. The
    statistics need the zones, which only the automation sensor loads: it runs by default, and a
    statistics step that finds the zones still loading waits for that run."""
    for (color, ym), lines in FILES.items():
        mirror.publish(color, ym, lines)
    mirror.publish_zones()
    keys = [f"{color}|{ym}-01" for color, ym in FILES]
    with (
        postgres_cluster(tmp_path / "pg") as pg_url,
        make_serve(tmp_path, pg_url, {"TAXI_SOURCE_URL": mirror.base_url}) as port,
    ):
        logs = tmp_path / "home" / "serve-logs"
        backfill = launch_backfill(port, keys, (*TRIP_ASSETS, "monthly_trip_stats"))

        def backfill_finished():
            found = backfill_runs(port, backfill)
            return found if len(found) == len(keys) and all(r["status"] in FINISHED for r in found) else None

        ran = wait_until(backfill_finished, 300, "the backfill's runs", interval=2)
        assert {_partition_of(r): r["status"] for r in ran} == dict.fromkeys(keys, "SUCCESS"), (
            logs / "daemon.log"
        ).read_text()[-3000:]
        settled = wait_until(lambda: _settled(port, len(keys)), 240, "the automation sensor's runs", interval=2)
        assert {r["status"] for r in settled} == {"SUCCESS"}, (logs / "daemon.log").read_text()[-3000:]
        assert partitions_materialized(port, "monthly_trip_stats") == len(keys)
        assert latest_materialization_ms(port, "taxi/zones") is not None

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        stats = conn.execute(
            f"SELECT color, strftime(month, '%Y-%m'), pickup_borough, {', '.join(STAT_COLUMNS)} FROM monthly_trip_stats"
        ).fetchall()
    got = {(c, ym, borough): dict(zip(STAT_COLUMNS, figures, strict=True)) for c, ym, borough, *figures in stats}
    for (color, ym), lines in FILES.items():
        month = dt.date.fromisoformat(f"{ym}-01")
        if color == "fhv":  # no fares, and 2019's fhv files name no pickup zone: every trip is 'Unknown'
            assert got[(color, ym, "Unknown")]["trips"] == len(lines) - 1
            continue
        pickup = {"yellow": "tpep_pickup_datetime", "green": "lpep_pickup_datetime"}[color]
        expected = expected_stats(lines, pickup, month, (month + dt.timedelta(days=32)).replace(day=1))
        assert {b for c, m, b in got if (c, m) == (color, ym)} == set(expected), (color, ym)
        for borough, figures in expected.items():
            for name, value in figures.items():
                expected_value = value if value is None else pytest.approx(value, rel=1e-9)
                assert got[(color, ym, borough)][name] == expected_value, (color, ym, borough, name)


# A fault test of minutes (two kills and the restarts they need), with the
# other outage tests in `make test-extended`, so that `make test` stays under its 15 minutes.
@pytest.mark.extended
def test_a_backfill_survives_a_killed_daemon_and_a_killed_run_worker(mirror, tmp_path):
    """12 partitions in one backfill. Halfway, the daemon is SIGKILLed (make serve starts it again)
    and one run's process is SIGKILLed mid-run (run monitoring marks it failed, run retries run it
    again). The backfill completes and every partition is in the warehouse exactly once."""
    months = [f"2020-{m:02d}" for m in range(1, 13)]
    big = "2020-06"  # long enough to be killed mid-run
    for ym in months:
        lines = YELLOW[:1] + YELLOW[1:] * (150 if ym == big else 1)
        mirror.publish("yellow", ym, lines)
    keys = [f"yellow|{ym}-01" for ym in months]
    # Run monitoring polls every 2 s here instead of 30 s, to keep the test short.
    instance_yaml = (
        (ROOT / "deploy" / "dagster.yaml").read_text().replace("poll_interval_seconds: 30", "poll_interval_seconds: 2")
    )
    assert "poll_interval_seconds: 2" in instance_yaml
    with (
        postgres_cluster(tmp_path / "pg") as pg_url,
        make_serve(tmp_path, pg_url, {"TAXI_SOURCE_URL": mirror.base_url}, instance_yaml) as port,
    ):
        backfill = launch_backfill(port, keys)

        wait_until(lambda: sum(r["status"] == "SUCCESS" for r in backfill_runs(port, backfill)) >= 3, 240, "3 runs")
        daemon = _pids(f"dagster-daemon run -w {tmp_path / 'home'}")
        assert len(daemon) == 1
        os.kill(daemon[0], signal.SIGKILL)
        wait_until(lambda: _pids(f"dagster-daemon run -w {tmp_path / 'home'}") not in ([], daemon), 30, "a new daemon")

        def big_run_started():
            for run in runs(port):
                if _partition_of(run) == f"yellow|{big}-01" and run["status"] == "STARTED":
                    return run_worker_pid(port, run["runId"]) and run
            return None

        killed = wait_until(big_run_started, 240, "the big partition's run", interval=0.2)
        os.kill(run_worker_pid(port, killed["runId"]), signal.SIGKILL)

        def every_partition_succeeded():
            found = runs(port)
            done = {_partition_of(r) for r in found if r["status"] == "SUCCESS"}
            busy = [r for r in found if r["status"] not in ("SUCCESS", "FAILURE", "CANCELED")]
            return found if done == set(keys) and not busy else None

        final = wait_until(every_partition_succeeded, 300, "every partition", interval=2)
        killed_now = next(r for r in final if r["runId"] == killed["runId"])
        assert killed_now["status"] == "FAILURE"  # marked by run monitoring, not left STARTED
        retries = [r for r in final if {"key": "dagster/parent_run_id", "value": killed["runId"]} in r["tags"]]
        assert [r["status"] for r in retries] == ["SUCCESS"]

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = dict(conn.execute("SELECT strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall())
    assert slices == {ym: 3000 * (150 if ym == big else 1) for ym in months}


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]
