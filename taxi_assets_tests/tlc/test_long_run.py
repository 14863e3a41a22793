"""A code location left running for months: the tlc grid follows the calendar with no reload.

The definitions are built once, at one date, and evaluated months later (the same object, as a
long-lived code server keeps it), with the process's wall clock moved by time-machine (the
monotonic clock is left alone, so Dagster's timed waits still return)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import dagster as dg
import duckdb
import pytest
import time_machine

from taxi_assets.run_history import TRIGGER_TAG
from taxi_assets_tests.helpers import build_test_defs, step_failure_messages
from taxi_assets_tests.tlc.eras import ERAS, write_era

UTC = dt.timezone.utc
BUILT = dt.datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
LATER = dt.datetime(2027, 3, 25, 6, 0, tzinfo=UTC)  # the schedule's tick, three months on


def _newest_era(color: str):
    return max((e for e in ERAS if e.color == color), key=lambda e: e.month)


def _publish(mirror, color: str, ym: str, rows: int, mtime: int) -> None:
    write_era(dataclasses.replace(_newest_era(color), month=ym), mirror.path(color, ym), rows=rows)
    mirror.touch(color, ym, mtime)


def _slice_rows(data_dir, key: str) -> int:
    color, month = key.split("|")
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM rides WHERE color = ? AND month = ?", [color, dt.date.fromisoformat(month)]
        ).fetchone()[0]


def test_definitions_built_once_follow_the_calendar(mirror, local_env, instance):
    with time_machine.travel(BUILT):
        defs = build_test_defs("local", mirror)  # loaded once, on 2026-12-02
    sensor = defs.get_sensor_def("upstream_files_sensor")
    schedule = defs.get_schedule_def("newest_month_schedule")
    job = defs.resolve_job_def("trips_job")
    resources = {"upstream_files": defs.resources["upstream_files"]}

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = sensor(context)
        return {r.partition_key: r.tags[TRIGGER_TAG] for r in result.run_requests}, result.cursor

    def schedule_tick():
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=LATER, resources=resources
        ) as context:
            return schedule(context)

    def run(key):
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
        assert result.success, step_failure_messages(result)

    rows = {"yellow|2026-09-01": 100, "green|2026-10-01": 50, "fhvhv|2026-10-01": 30}
    for key, n in rows.items():
        color, month = key.split("|")
        _publish(mirror, color, month[:7], n, 1_790_000_000)
    with time_machine.travel(BUILT):
        requested, cursor = tick(None)
        assert requested == dict.fromkeys(rows, "new")
        for key in requested:
            run(key)
        # 2026-11 ended the day before: it cannot be out yet, and a run refuses it.
        with pytest.raises(dg.DagsterUnknownPartitionError):
            job.execute_in_process(partition_key="yellow|2026-11-01", instance=instance)

    # Three months on: three new months upstream, and the TLC re-publishes yellow 2026-09.
    new = {"yellow|2026-11-01": 110, "yellow|2026-12-01": 120, "yellow|2027-01-01": 130, "green|2027-01-01": 60}
    new |= {"fhvhv|2026-12-01": 40}
    for key, n in new.items():
        color, month = key.split("|")
        _publish(mirror, color, month[:7], n, 1_800_000_000)
    _publish(mirror, "yellow", "2026-09", 105, 1_800_000_000)
    _publish(mirror, "yellow", "2027-02", 10, 1_800_000_000)  # on the mirror early: not in the grid until May
    with time_machine.travel(LATER):
        requested, cursor = tick(cursor)
        assert requested == {**dict.fromkeys(new, "new"), "yellow|2026-09-01": "changed"}
        scheduled = schedule_tick()
        # The month before last for each color that is out; fhv and fhvhv 2027-01 are not.
        assert [r.partition_key for r in scheduled] == ["yellow|2027-01-01", "green|2027-01-01"]
        assert {r.tags[TRIGGER_TAG] for r in scheduled} == {"schedule"}
        for key in requested:  # under the later clock, by the definitions loaded in December
            run(key)
        rows |= new | {"yellow|2026-09-01": 105}
        assert {key: _slice_rows(local_env, key) for key in rows} == rows

        assert tick(cursor)[0] == {}  # a third tick: nothing
        assert tick(None)[0] == {}  # nothing either with no cursor: the run history says it all
        again = schedule_tick()
        assert isinstance(again, dg.SkipReason) and "not out yet (fhv, fhvhv)" in again.skip_message
