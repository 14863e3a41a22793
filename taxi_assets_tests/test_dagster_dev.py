"""What a user does in the UI: `dagster dev`, then a partition backfill, run by the daemon."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb

from taxi_assets_tests.conftest import real_rows
from taxi_assets_tests.emulators import free_port

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = ["yellow|2021-01-01", "green|2020-10-01"]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_partition_backfill_from_the_ui(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copyfile(ROOT / "taxi_assets" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "TAXI_DATA_DIR": str(data), "TAXI_SOURCE_URL": mirror.base_url}
    with open(tmp_path / "dev.log", "wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def webserver_up():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                return True
            except OSError:
                return False

        _wait_until(webserver_up, 120, "the webserver")
        assets = ", ".join(
            f'{{path: ["{name}"]}}' for name in ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table")
        )
        launched = _graphql(
            port,
            f"mutation {{ launchPartitionBackfill(backfillParams: {{ assetSelection: [{assets}], "
            f"partitionNames: {json.dumps(PARTITIONS)} }}) {{ __typename ... on LaunchBackfillSuccess {{ backfillId }} "
            f"... on PythonError {{ message }} }} }}",
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = launched["backfillId"]

        def runs_finished():
            result = _graphql(
                port,
                f'{{ partitionBackfillOrError(backfillId: "{backfill}") {{ ... on PartitionBackfill '
                f"{{ runs(limit: 10) {{ status tags {{ key value }} }} }} }} }}",
            )["partitionBackfillOrError"]["runs"]
            done = [r for r in result if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            return result if len(result) == len(PARTITIONS) and len(done) == len(result) else None

        runs = _wait_until(runs_finished, 240, "the backfill's runs")
        partitions = {
            tag["value"]: run["status"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/partition"
        }
        assert partitions == {key: "SUCCESS" for key in PARTITIONS}, (tmp_path / "dev.log").read_text()[-3000:]
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()

    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert sorted(slices) == [("green", "2020-10", 500), ("yellow", "2021-01", 3000)]
