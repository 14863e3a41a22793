"""The tlc source: the TLC's own Parquet files, every schema era of every color, through the same
assets, lake layout and warehouse; the grid of months that can exist; refresh and schedule."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.assets import build_assets
from taxi_assets.partitions import upstream_keys
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.run_history import TOKEN_TAG, TRIGGER_TAG
from taxi_assets.schedules import month_before_last, newest_month_schedule
from taxi_assets.sensors import upstream_files_sensor
from taxi_assets.sources import TLC
from taxi_assets_tests.helpers import build_test_defs, local_resources, step_failure_messages
from taxi_assets_tests.tlc.eras import ERAS, write_era

ASSETS = build_assets(TLC, "local")  # the assets as the tlc code location has them


@pytest.fixture
def resources(mirror, tmp_path):
    return local_resources(tmp_path, mirror)  # its source serves the tlc layout of the mirror


def _run(resources, instance, key):
    return dg.materialize(ASSETS.trips, partition_key=key, resources=resources, instance=instance, raise_on_error=False)


def _slice_rows(tmp_path, color, month) -> int:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM rides WHERE color = ? AND month = ?", [color, month]).fetchone()[0]


def test_the_grid_is_month_by_color_and_ends_at_the_month_before_last():
    grid = ASSETS.partitions_def
    assert grid.partition_dimension_names == ["color", "month"]
    on = dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc)
    keys = grid.get_partition_keys(current_time=on)
    assert keys[0] == "yellow|2011-01-01" and len(keys) == 190 * 4  # 2011-01 .. 2026-10, four colors
    assert "yellow|2026-10-01" in keys and "yellow|2026-11-01" not in keys  # neither Dec nor Nov is out yet
    later = grid.get_partition_keys(current_time=on + dt.timedelta(days=31))  # the same object, a month on
    assert set(later) - set(keys) == {f"{c}|2026-11-01" for c in ("yellow", "green", "fhv", "fhvhv")}

    checked = upstream_keys(TLC, on)  # what the sensor checks: the cells that can hold a file
    firsts = {color: min(k for k in checked if k.startswith(color + "|")) for color in TLC.colors}
    assert firsts == {
        "yellow": "yellow|2011-01-01",
        "green": "green|2014-01-01",
        "fhv": "fhv|2015-01-01",
        "fhvhv": "fhvhv|2019-02-01",
    }
    assert len(checked) == 760 - 36 - 48 - 97  # green 2011-2013, fhv 2011-2014, fhvhv 2011-01 .. 2019-01


def test_a_cell_before_its_colors_first_file_succeeds_at_once_holding_nothing(mirror, tmp_path, instance, resources):
    result = _run(resources, instance, "fhvhv|2019-01-01")
    assert result.success, step_failure_messages(result)
    for asset in ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table"):
        [materialization] = result.asset_materializations_for_node(asset)
        assert materialization.metadata["dagster/row_count"].value == 0
        assert materialization.metadata["no_file"].value == "no TLC file before 2019-02 for fhvhv"
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not mirror.requests  # nothing asked of upstream
    assert not (tmp_path / "lake").exists() or not any(p.is_file() for p in (tmp_path / "lake").rglob("*"))
    assert not (tmp_path / "warehouse.duckdb").exists()  # the warehouse is not touched


def test_the_statistics_of_a_cell_before_its_colors_first_file_succeed_holding_nothing(
    mirror, tmp_path, instance, resources
):
    # Launched by hand on a fresh warehouse (no zones, no rides): nothing to wait for, nothing written.
    result = dg.materialize(
        [*ASSETS.trips, ASSETS.monthly_trip_stats],
        selection=[ASSETS.monthly_trip_stats.key],
        partition_key="green|2013-12-01",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, step_failure_messages(result)
    [materialization] = result.asset_materializations_for_node("monthly_trip_stats")
    assert materialization.metadata["no_file"].value == "no TLC file before 2014-01 for green"
    assert materialization.metadata["dagster/row_count"].value == 0
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not (tmp_path / "warehouse.duckdb").exists()


@pytest.mark.parametrize("era", ERAS, ids=[f"{e.color}-{e.month}" for e in ERAS])
def test_every_era_lands_with_the_pinned_schema_and_exact_counts(era, mirror, tmp_path, instance, resources):
    write_era(era, mirror.path(era.color, era.month), rows=1_000)
    key = f"{era.color}|{era.month}-01"
    result = _run(resources, instance, key)
    assert result.success, step_failure_messages(result)
    published = tmp_path / "lake" / "data" / era.color / f"{era.color}_tripdata_{era.month}.parquet"
    raw = tmp_path / "lake" / "raw" / era.color / f"{era.color}_tripdata_{era.month}.parquet"
    assert raw.read_bytes() == mirror.path(era.color, era.month).read_bytes()  # byte for byte
    assert pq.read_schema(published).equals(TLC.schemas[era.color])
    assert pq.read_metadata(published).num_rows == 1_000  # source rows = lake rows
    assert _slice_rows(tmp_path, era.color, dt.date.fromisoformat(f"{era.month}-01")) == 1_000  # = warehouse rows
    source = pq.read_table(mirror.path(era.color, era.month))
    lake = pq.read_table(published)
    for name in ("PULocationID", "PUlocationID"):
        if name in source.column_names:  # ids as int32, int64 or whole doubles: the same numbers
            assert lake.column("PULocationID").to_pylist() == [
                None if v is None else int(v) for v in source.column(name).to_pylist()
            ]


def test_fhvhv_maps_its_shared_columns_into_rides(mirror, tmp_path, instance, resources):
    era = next(e for e in ERAS if e.color == "fhvhv" and e.month == "2021-06")
    source = pq.read_table(write_era(era, mirror.path("fhvhv", "2021-06"), rows=300))
    assert _run(resources, instance, "fhvhv|2021-06-01").success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        got = conn.execute(
            "SELECT sum(trip_distance), sum(fare_amount), sum(tip_amount), count(pickup_datetime), count(VendorID) "
            "FROM rides WHERE color = 'fhvhv'"
        ).fetchone()
        # Its own columns, through the view over its published lake files.
        own = conn.execute("SELECT count(*), sum(driver_pay), count(request_datetime) FROM fhvhv_trips").fetchone()
    sums = [pa.compute.sum(source.column(c)).as_py() for c in ("trip_miles", "base_passenger_fare", "tips")]
    assert got[:3] == pytest.approx(sums) and got[3:] == (300, 0)
    assert own == (300, pytest.approx(pa.compute.sum(source.column("driver_pay")).as_py()), 300)


def test_a_fraction_in_an_integer_column_fails_naming_column_and_row(mirror, instance, resources):
    era = next(e for e in ERAS if e.color == "yellow" and e.month == "2019-06")
    path = write_era(era, mirror.path("yellow", "2019-06"), rows=100)
    table = pq.read_table(path)
    counts = table.column("passenger_count").to_pylist()
    counts[41] = 2.5
    pq.write_table(table.set_column(3, "passenger_count", pa.array(counts, pa.float64())), path)
    result = _run(resources, instance, "yellow|2019-06-01")
    assert not result.success
    [message] = step_failure_messages(result)
    assert "column 'passenger_count', row 42: value 2.5 is not a whole number" in message


def test_a_month_not_out_answers_403_and_fails_at_once(mirror, instance, resources):
    result = _run(resources, instance, "green|2024-02-01")
    assert not result.success
    [message] = step_failure_messages(result)
    assert "green_tripdata_2024-02.parquet: not published upstream (HTTP 403)" in message
    assert mirror.requests.count("GET /trip-data/green_tripdata_2024-02.parquet") == 1  # not retried


def _tick(mirror, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"upstream_files": UpstreamFiles.of(TLC, base_url=mirror.base_url)}
    )
    result = upstream_files_sensor(context)
    return {r.partition_key: r for r in result.run_requests}, result.cursor


def test_a_republished_month_is_requested_once_and_replaces_its_slice(mirror, tmp_path, instance, resources):
    era = next(e for e in ERAS if e.color == "green" and e.month == "2020-10")
    write_era(era, mirror.path("green", "2020-10"), rows=500)
    mirror.touch("green", "2020-10", 1_600_000_000)
    requested, cursor = _tick(mirror, instance)
    assert set(requested) == {"green|2020-10-01"}  # months not out (403) are skipped
    assert _run(resources, instance, "green|2020-10-01").success
    assert _tick(mirror, instance)[0] == {}  # loaded: an empty cursor requests nothing

    write_era(era, mirror.path("green", "2020-10"), rows=800)  # re-published: new Last-Modified, size
    mirror.touch("green", "2020-10", 1_700_000_000)
    requested, cursor = _tick(mirror, instance, cursor)
    assert {k: r.tags[TRIGGER_TAG] for k, r in requested.items()} == {"green|2020-10-01": "changed"}
    assert _tick(mirror, instance, cursor)[0] == {}  # once
    assert _run(resources, instance, "green|2020-10-01").success
    assert _slice_rows(tmp_path, "green", dt.date(2020, 10, 1)) == 800


def test_the_schedule_asks_for_the_month_before_last_and_skips_it_when_not_out(mirror, instance, resources):
    tick = dt.datetime(2025, 4, 25, 6, 0, tzinfo=dt.timezone.utc)
    assert month_before_last(tick.date()) == dt.date(2025, 2, 1)

    def evaluate():
        # Closed after use: the context opens its own instance from the ref, which would otherwise
        # outlive it as the process's current one and break later tests in this session.
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            resources={"upstream_files": UpstreamFiles.of(TLC, base_url=mirror.base_url)},
        ) as context:
            return newest_month_schedule(context)

    skipped = evaluate()
    assert isinstance(skipped, dg.SkipReason) and "2025-02 is not out yet" in skipped.skip_message
    yellow = next(e for e in ERAS if e.color == "yellow" and e.month == "2025-02")
    write_era(yellow, mirror.path("yellow", "2025-02"), rows=10)
    out = evaluate()
    assert [r.partition_key for r in out] == ["yellow|2025-02-01"]  # the colors not out yet are skipped
    assert _run(resources, instance, "yellow|2025-02-01").success  # as if the sensor had loaded it first
    again = evaluate()
    assert isinstance(again, dg.SkipReason)  # not loaded twice


def test_a_file_the_sensor_or_the_schedule_is_loading_is_not_requested_again(mirror, instance):
    """A month published in the hour before the schedule's tick: the sensor requested it, its run has not
    started yet, and the schedule does not request it a second time (nor the sensor one the schedule
    requested); a revision of the file while the run is queued is requested."""
    tick = dt.datetime(2025, 4, 25, 6, 0, tzinfo=dt.timezone.utc)
    yellow = next(e for e in ERAS if e.color == "yellow" and e.month == "2025-02")
    write_era(yellow, mirror.path("yellow", "2025-02"), rows=10)
    files = UpstreamFiles.of(TLC, base_url=mirror.base_url)
    trips_job = build_test_defs("local", mirror).resolve_job_def("trips_job")

    def sensor_requests():
        context = dg.build_sensor_context(instance=instance, resources={"upstream_files": files})
        return [r for r in upstream_files_sensor(context).run_requests if r.partition_key == "yellow|2025-02-01"]

    def schedule_result():
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, resources={"upstream_files": files}
        ) as context:
            return newest_month_schedule(context)

    def queue(request):
        tags = {**request.tags, "dagster/partition": request.partition_key}
        return instance.create_run_for_job(trips_job, tags=tags, status=dg.DagsterRunStatus.NOT_STARTED)

    (by_sensor,) = sensor_requests()
    run = queue(by_sensor)
    skipped = schedule_result()
    assert isinstance(skipped, dg.SkipReason)  # yellow is being loaded; the other colors are not out
    instance.delete_run(run.run_id)

    (by_schedule,) = schedule_result()
    queue(by_schedule)
    assert sensor_requests() == []

    write_era(yellow, mirror.path("yellow", "2025-02"), rows=12)  # revised while the run waits
    (revised,) = sensor_requests()
    assert revised.tags[TOKEN_TAG] != by_schedule.tags[TOKEN_TAG]
