"""upstream_files_sensor against a real loopback mirror."""

import json
import os

import dagster as dg

from taxi_assets.partitions import trip_partitions
from taxi_assets_tests.conftest import fhv_month, real_rows


def test_sensor_requests_new_and_changed_files_once(mirror, local_env, instance):
    from taxi_assets.definitions import build_defs

    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.publish("fhv", "2019-01", fhv_month("2019-01"))
    defs = build_defs("local")
    sensor = defs.resolve_sensor_def("upstream_files_sensor")

    def tick(cursor):
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources={"source": defs.resources["source"]}
        )
        result = sensor.evaluate_tick(context)
        return result, result.cursor

    cursor = None
    requested = []
    # Walk the whole grid, a slice per tick, as the daemon would.
    for _ in range(len(trip_partitions.get_partition_keys()) // 30 + 1):
        result, cursor = tick(cursor)
        requested += [r.partition_key for r in result.run_requests]
    assert sorted(requested) == ["fhv|2019-01-01", "yellow|2021-01-01"]
    assert set(json.loads(cursor)["fingerprints"]) == {"fhv|2019-01-01", "yellow|2021-01-01"}

    # A file that changes upstream is requested again, with a new run key.
    mirror.publish("fhv", "2019-01", fhv_month("2019-01")[:10])
    os.utime(mirror.path("fhv", "2019-01"), (1, 1))
    again = []
    for _ in range(len(trip_partitions.get_partition_keys()) // 30 + 1):
        result, cursor = tick(cursor)
        again += [(r.partition_key, r.run_key) for r in result.run_requests]
    assert [k for k, _ in again] == ["fhv|2019-01-01"]
    assert again[0][1].startswith("fhv|2019-01-01@")
