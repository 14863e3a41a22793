"""The production instance as `make serve` runs it: a code server, the webserver and the daemon
against a real PostgreSQL server; the sensor turned on over GraphQL finds the mirror's files and the
daemon runs them."""

import contextlib
import time
from pathlib import Path

import duckdb
import pytest

from taxi_assets_tests.conftest import fhv_month, real_rows
from taxi_assets_tests.graphql import graphql, max_overlap, runs, wait_until
from taxi_assets_tests.instances import make_serve
from taxi_assets_tests.postgres import postgres_cluster, server_binaries

pytestmark = pytest.mark.slow
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


@pytest.mark.skipif(server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)")
def test_make_serve_runs_what_the_sensor_finds_on_postgres(mirror, tmp_path):
    for (color, ym), lines in FILES.items():
        mirror.publish(color, ym, lines)
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
            found = runs(port)
            done = [r for r in found if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
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

        # Run storage is PostgreSQL, not a SQLite file under DAGSTER_HOME.
        import psycopg2

        with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == len(FILES)
        assert not list((tmp_path / "home").rglob("*.db"))

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert {(c, ym): n for c, ym, n in slices} == {key: len(lines) - 1 for key, lines in FILES.items()}
    print(f"deployment test: {time.monotonic() - started:.0f} s, at most {overlap} runs at once")
