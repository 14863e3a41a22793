"""upstream_files_sensor against a real loopback mirror and a real instance."""

import json
import os

import dagster as dg

from taxi_assets.assets import build_assets
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.run_history import TRIGGER_TAG
from taxi_assets.sensors import upstream_files_sensor
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import fhv_month, local_resources, real_rows

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
raw_trips = ASSETS.raw_trips

PUBLISHED = {
    "yellow|2021-01-01": real_rows("yellow_tripdata_2021-01_head3000.csv"),
    "green|2020-10-01": real_rows("green_tripdata_2020-10_tail500.csv"),
    "fhv|2019-01-01": fhv_month("2019-01"),
    "fhv|2019-02-01": fhv_month("2019-02"),
}


def _publish(mirror, key, lines):
    color, month = key.split("|")
    mirror.publish(color, month[:7], lines)


def _tick(mirror, instance, cursor=None):
    files = UpstreamFiles.of(RELEASES, base_url=mirror.base_url)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"upstream_files": files})
    result = upstream_files_sensor(context)
    return {r.partition_key: r for r in result.run_requests}, result


def test_the_first_tick_checks_the_whole_grid_and_requests_every_published_partition(mirror, instance):
    for key, lines in PUBLISHED.items():
        _publish(mirror, key, lines)
    requested, result = _tick(mirror, instance)
    assert set(requested) == set(PUBLISHED)
    assert {r.tags[TRIGGER_TAG] for r in requested.values()} == {"new"}
    assert all(r.run_key.startswith(f"{key}@") for key, r in requested.items())
    heads = [r for r in mirror.requests if r.startswith("HEAD ")]
    assert len(heads) == 93  # every month x color of the grid, in one tick
    assert set(json.loads(result.cursor)) == set(PUBLISHED)


def test_after_a_backfill_an_empty_cursor_requests_nothing_and_a_changed_file_exactly_itself(
    mirror, instance, tmp_path
):
    for key, lines in PUBLISHED.items():
        _publish(mirror, key, lines)
    resources = local_resources(tmp_path, mirror)
    for key in PUBLISHED:
        assert dg.materialize([raw_trips], partition_key=key, resources=resources, instance=instance).success

    requested, result = _tick(mirror, instance)  # turned on after the backfill: empty cursor
    assert requested == {}
    assert "4 published, 0 new or changed" in result.skip_reason.skip_message

    # fhv 2019-02 is re-published with other contents; a month appears that was not there.
    _publish(mirror, "fhv|2019-02-01", fhv_month("2019-02")[:5])
    os.utime(mirror.path("fhv", "2019-02"), (10**9, 10**9))
    _publish(mirror, "green|2019-05-01", real_rows("green_tripdata_2020-10_tail500.csv"))
    requested, result = _tick(mirror, instance, cursor=result.cursor)
    assert {k: r.tags[TRIGGER_TAG] for k, r in requested.items()} == {
        "fhv|2019-02-01": "changed",
        "green|2019-05-01": "new",
    }

    # The same versions are not requested twice, whether the runs have happened yet or not.
    again, _ = _tick(mirror, instance, cursor=result.cursor)
    assert again == {}


def test_months_not_published_are_not_requested(mirror, instance):
    requested, result = _tick(mirror, instance)
    assert requested == {}
    assert (
        "checked 93 of 93 upstream files" in result.skip_reason.skip_message
        and "0 published" in result.skip_reason.skip_message
    )
