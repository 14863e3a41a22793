"""A deployment upgraded from the tlc grid of static keys: its run history, lake and warehouse,
written by the code of main at 0a89c96 (fixtures/history_static_keys, made by its make.py), read
by this code; and the grid as the UI shows it, through the webserver's GraphQL."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tarfile

import dagster as dg
import duckdb
import pytest

from taxi_assets.grid_upkeep import COLOR_TAG as COLOR
from taxi_assets.grid_upkeep import MONTH_TAG as MONTH
from taxi_assets.grid_upkeep import grid_upkeep_sensor, tag_dimensions
from taxi_assets.sources import TLC, month_after
from taxi_assets_harness.graphql import partition_grid
from taxi_assets_harness.instances import webserver
from taxi_assets_tests.helpers import FIXTURES, build_test_defs, step_failure_messages

HISTORY = FIXTURES / "history_static_keys" / "history.tar.gz"
LOADED = {"yellow|2021-01-01": 45, "green|2020-10-01": 30, "fhvhv|2021-06-01": 20}  # by main's code
TRIP_ASSETS = ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table")


@pytest.fixture
def upgraded(tmp_path, mirror, local_env):
    """The instance (home), lake and warehouse (TAXI_DATA_DIR) as main's code left them, and the
    mirror serving the files it loaded, with their Last-Modified times."""
    with tarfile.open(HISTORY) as tar:
        tar.extractall(tmp_path / "old", filter="data")
    shutil.copytree(tmp_path / "old" / "data", local_env)
    shutil.copytree(tmp_path / "old" / "mirror", mirror.root, dirs_exist_ok=True)  # copy2: times kept
    return tmp_path / "old" / "home", json.loads((tmp_path / "old" / "cursor.json").read_text())


def _cells(today: dt.date) -> tuple[set[str], set[str]]:
    """The grid's keys on `today` that can hold a file, and those before their color's first file."""
    last = today.replace(day=1)
    for _ in range(2):  # neither the current month nor the one before
        last = (last - dt.timedelta(days=1)).replace(day=1)
    real, empty = set(), set()
    for color in TLC.colors:
        month = dt.date(2011, 1, 1)
        while month <= last:
            (real if month >= TLC.first_month[color] else empty).add(f"{color}|{month.isoformat()}")
            month = month_after(month)
    return real, empty


def test_history_of_the_static_keys_is_read_as_loaded_and_nothing_is_requested_again(upgraded, mirror, local_env):
    home, cursor = upgraded
    defs = build_test_defs("local", mirror)
    resources = {"upstream_files": defs.resources["upstream_files"]}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        sensor = defs.get_sensor_def("upstream_files_sensor")
        for known in (cursor, None):  # the sensor's own cursor, or turned on afresh: the history decides
            result = sensor(dg.build_sensor_context(instance=instance, cursor=known, resources=resources))
            assert result.run_requests == [] and "3 published, 0 new or changed" in result.skip_reason.skip_message
        tick = dt.datetime(2021, 8, 25, 6, tzinfo=dt.timezone.utc)  # asks for 2021-06: fhvhv's is loaded
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, resources=resources) as c:
            skipped = defs.get_schedule_def("newest_month_schedule")(c)
        assert isinstance(skipped, dg.SkipReason), skipped

        # The lake's raw copy is kept (its upstream file is unchanged) and the slice replaced.
        result = defs.resolve_job_def("trips_job").execute_in_process(
            partition_key="yellow|2021-01-01", instance=instance, raise_on_error=False
        )
        assert result.success, step_failure_messages(result)
        [raw] = result.asset_materializations_for_node("raw_trips")
        assert raw.metadata["download_skipped"].value is True
    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        slices = dict(conn.execute("SELECT color || '|' || month, count(*) FROM rides GROUP BY ALL").fetchall())
    assert slices == LOADED


def test_the_upkeep_tags_each_materialization_of_the_static_keys_once(upgraded):
    home, _ = upgraded
    with dg.instance_for_test(temp_dir=str(home)) as instance:

        def untagged():
            return {
                asset: sum(1 for tags in instance.get_event_tags_for_asset(dg.AssetKey(asset)) if COLOR not in tags)
                for asset in TRIP_ASSETS
            }

        def tagged():
            return {
                asset: sorted(
                    f"{tags[COLOR]}|{tags[MONTH]}"
                    for tags in instance.get_event_tags_for_asset(dg.AssetKey(asset))
                    if COLOR in tags
                )
                for asset in TRIP_ASSETS
            }

        assert untagged() == dict.fromkeys(TRIP_ASSETS, 4)  # yellow 2021-01 twice, green, fhvhv: no tags
        cursor, count, more = tag_dimensions(instance, {})
        assert (count, more) == (16, False) and untagged() == dict.fromkeys(TRIP_ASSETS, 0)
        assert tagged() == dict.fromkeys(TRIP_ASSETS, sorted([*LOADED, "yellow|2021-01-01"]))
        assert tag_dimensions(instance, cursor)[1] == 0  # once: a later tick reads only new records
        assert tagged() == dict.fromkeys(TRIP_ASSETS, sorted([*LOADED, "yellow|2021-01-01"]))


@pytest.mark.slow
def test_the_ui_shows_a_month_by_color_grid_with_history_of_the_static_keys_loaded(upgraded, mirror, tmp_path):
    home, _ = upgraded
    env = {"TAXI_SOURCE": "tlc", "TAXI_TLC_URL": mirror.base_url, "TAXI_TARGET": "local"}
    real, empty = _cells(dt.date.today())

    # Dagster's status cache (every current storage): rebuilt when the partitions definition changed.
    with webserver(home, env, tmp_path / "webserver.log") as port:
        grid = partition_grid(port, "raw_trips")
        assert grid["type"] == "MULTIPARTITIONED" and grid["dimensions"] == {"color": "STATIC", "month": "TIME_WINDOW"}
        assert grid["primary"] == "month"  # the time strip
        assert grid["keys"]["color"] == ["yellow", "green", "fhv", "fhvhv"]
        months = grid["keys"]["month"]
        assert months[0] == "2011-01-01" and len(months) * 4 == len(real | empty)
        assert {f"{c}|{m}" for c in grid["keys"]["color"] for m in months} == real | empty  # no month not out yet
        for asset in TRIP_ASSETS:
            assert partition_grid(port, asset)["materialized"] == set(LOADED), asset

    # Without the cache (a storage whose schema has none), Dagster reads the dimension tags only.
    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        db.execute("ALTER TABLE asset_keys DROP COLUMN cached_status_data")
    with webserver(home, env, tmp_path / "webserver-uncached.log") as port:
        assert partition_grid(port, "raw_trips")["materialized"] == set()  # recorded untagged: read as missing
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            cursor, ticks = None, 0
            while not (cursor and json.loads(cursor)["empty_cells_recorded"]):
                cursor = grid_upkeep_sensor(dg.build_sensor_context(instance=instance, cursor=cursor)).cursor
                ticks += 1
            assert ticks == 5  # 181 cells, 40 a tick
            again = grid_upkeep_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
            assert again.skip_reason.skip_message.startswith("0 cells") and "; 0 materializations" in str(
                again.skip_reason
            )
        for asset in (*TRIP_ASSETS, "monthly_trip_stats"):
            grid = partition_grid(port, asset)
            loaded = set(LOADED) if asset != "monthly_trip_stats" else set()
            assert grid["materialized"] == loaded | empty, asset
            # What "missing" offers in the launch dialog: only cells that can hold a file.
            missing = {f"{c}|{m}" for c in grid["keys"]["color"] for m in grid["keys"]["month"]} - grid["materialized"]
            assert missing == real - loaded, asset
