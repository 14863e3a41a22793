"""What a user does in the UI: `dagster dev`, then a partition backfill, run by the daemon."""

import duckdb
import pytest

from taxi_assets_harness.graphql import wait_until
from taxi_assets_harness.instances import backfill_runs, dagster_dev, launch_backfill
from taxi_assets_tests.conftest import real_rows

pytestmark = pytest.mark.slow
PARTITIONS = ["yellow|2021-01-01", "green|2020-10-01"]


def test_partition_backfill_from_the_ui(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    with dagster_dev(tmp_path, {"TAXI_SOURCE_URL": mirror.base_url}) as port:
        backfill = launch_backfill(port, PARTITIONS)

        def runs_finished():
            runs = backfill_runs(port, backfill)
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            return runs if len(runs) == len(PARTITIONS) and len(done) == len(runs) else None

        runs = wait_until(runs_finished, 240, "the backfill's runs")
        partitions = {
            tag["value"]: run["status"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/partition"
        }
        assert partitions == {key: "SUCCESS" for key in PARTITIONS}, (tmp_path / "dev.log").read_text()[-3000:]

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert sorted(slices) == [("green", "2020-10", 500), ("yellow", "2021-01", 3000)]
