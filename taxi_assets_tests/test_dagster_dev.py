"""What a user does in the UI: `make dev` (dg dev), then a partition backfill, run by the daemon."""

import dagster as dg
import duckdb
import pytest

from taxi_assets.mirror import SAMPLE_NOTE
from taxi_assets_harness.graphql import graphql
from taxi_assets_harness.instances import dagster_dev, finished_backfill_runs, launch_backfill
from taxi_assets_tests.helpers import real_rows

pytestmark = pytest.mark.slow
PARTITIONS = ["yellow|2021-01-01", "green|2020-10-01"]


def test_partition_backfill_from_the_ui(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    with dagster_dev(tmp_path, {"TAXI_SOURCE_URL": mirror.base_url}) as port:
        backfill = launch_backfill(port, PARTITIONS)

        runs = finished_backfill_runs(port, backfill, len(PARTITIONS))
        partitions = {
            tag["value"]: run["status"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/partition"
        }
        assert partitions == {key: "SUCCESS" for key in PARTITIONS}, (tmp_path / "dev.log").read_text()[-3000:]

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert sorted(slices) == [("green", "2020-10", 500), ("yellow", "2021-01", 3000)]


@pytest.mark.extended  # make test's 15 minutes: test_ui_browser.py (extended too) does the same through Chromium
def test_after_the_demo_make_dev_backfills_the_sample_partitions_offline(tmp_path):
    """`make dev` on make demo's data folder serves the bundled sample again: a backfill from the UI
    of two sample partitions succeeds with no upstream reachable; the first page shows no modal."""
    data = tmp_path / "data"
    data.mkdir()
    (data / SAMPLE_NOTE).write_text("make demo\n")  # what the demo leaves there (test_demo checks it does)
    partitions = ["yellow|2020-07-01", "fhv|2019-01-01"]
    with dagster_dev(tmp_path, {"TAXI_SOURCE_URL": ""}) as port:
        assert graphql(port, "{ shouldShowNux }") == {"shouldShowNux": False}  # nux: enabled: false
        backfill = launch_backfill(port, partitions)

        runs = finished_backfill_runs(port, backfill, len(partitions))
        log = (tmp_path / "dev.log").read_text()
        assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], log[-3000:]
    assert "serving the bundled sample mirror" in log and "SupersessionWarning" not in log
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert sorted(slices) == [("fhv", "2019-01", 18), ("yellow", "2020-07", 266)]
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [raw] = instance.fetch_materializations(dg.AssetKey("raw_trips"), limit=1).records
    assert raw.asset_materialization.metadata["served_from"].value.startswith("bundled sample")
