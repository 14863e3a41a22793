"""taxi/zones, monthly_trip_stats and trips_per_month_chart on the local target, with figures
computed here, independently, from the fixture rows."""

import datetime as dt
import time

import dagster as dg
import duckdb
import pytest
from PIL import Image

from taxi_assets.assets import build_assets
from taxi_assets.assets.analytics import COLOR_OF, ZONES_KEY
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import fhv_month, local_resources, real_rows, step_failure_messages
from taxi_assets_tests.stats import STAT_COLUMNS, expected_stats

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
STATS = dg.AssetKey("monthly_trip_stats")

GREEN = real_rows("green_tripdata_2020-10_head3000.csv") + real_rows("green_tripdata_2020-10_tail500.csv")[1:]
YELLOW = real_rows("yellow_tripdata_2020-07_sample266.csv")


@pytest.fixture
def loaded(mirror, tmp_path, instance):
    """Three slices in `rides` and the zones table, as a user would have them."""
    mirror.publish("green", "2020-10", GREEN)
    mirror.publish("yellow", "2020-07", YELLOW)
    mirror.publish("fhv", "2019-01", fhv_month("2019-01"))
    mirror.publish_zones()
    resources = local_resources(tmp_path, mirror)
    for key in ("green|2020-10-01", "yellow|2020-07-01", "fhv|2019-01-01"):
        assert dg.materialize(ASSETS.trips, partition_key=key, resources=resources, instance=instance).success
    zones = dg.materialize(ASSETS.all, selection=[ZONES_KEY], resources=resources, instance=instance)
    assert zones.success
    return resources, zones


def _stats(resources, instance, key):
    result = dg.materialize(
        ASSETS.all, selection=["monthly_trip_stats"], partition_key=key, resources=resources, instance=instance
    )
    assert result.success
    return result


def _table(tmp_path, sql):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_taxi_zones_keeps_na_values_and_passes_its_check(loaded, tmp_path):
    _, result = loaded
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "has_265_zones_with_unique_ids" and check.passed
    rows = dict(
        (r[0], r[1:]) for r in _table(tmp_path, "SELECT LocationID, Borough, Zone, service_zone FROM main.zones")
    )
    assert len(rows) == 265
    assert rows[264] == ("Unknown", "NV", "N/A") and rows[265] == ("Unknown", "NA", "N/A")  # values, not NULLs


def test_monthly_trip_stats_match_the_fixture_rows(loaded, tmp_path, instance):
    resources, _ = loaded
    result = _stats(resources, instance, "green|2020-10-01")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["trips_add_up_to_the_slice"].passed
    assert checks["trips_add_up_to_the_slice"].metadata["rows_in_slice"].value == 3500
    got = {
        r[0]: dict(zip(STAT_COLUMNS, r[1:], strict=True))
        for r in _table(
            tmp_path,
            "SELECT pickup_borough, trips, passengers, total_fare, median_fare, mean_distance, card_tip_share, "
            "pickups_outside_month FROM main.monthly_trip_stats WHERE color = 'green'",
        )
    }
    expected = expected_stats(GREEN, "lpep_pickup_datetime", dt.date(2020, 10, 1), dt.date(2020, 11, 1))
    assert set(got) == set(expected)
    for borough, figures in expected.items():
        for name, value in figures.items():
            assert got[borough][name] == pytest.approx(value, rel=1e-9), (borough, name)


def test_a_rerun_leaves_one_copy_of_a_partitions_rows(loaded, tmp_path, instance):
    resources, _ = loaded
    for key in ("green|2020-10-01", "yellow|2020-07-01", "green|2020-10-01", "fhv|2019-01-01"):
        _stats(resources, instance, key)
    per_slice = dict(
        ((c, m), (rows, trips))
        for c, m, rows, trips in _table(
            tmp_path,
            "SELECT color, strftime(month, '%Y-%m'), count(*), sum(trips) FROM main.monthly_trip_stats GROUP BY ALL",
        )
    )
    green_boroughs = len(expected_stats(GREEN, "lpep_pickup_datetime", dt.date(2020, 10, 1), dt.date(2020, 11, 1)))
    assert per_slice[("green", "2020-10")] == (green_boroughs, 3500)
    assert per_slice[("yellow", "2020-07")][1] == 266
    assert per_slice[("fhv", "2019-01")] == (1, 18)  # fhv 2019-01 has no pickup zones: all "Unknown"


def test_the_chart_draws_one_line_per_color_loaded(loaded, tmp_path, instance):
    resources, _ = loaded
    for key in ("green|2020-10-01", "yellow|2020-07-01"):
        _stats(resources, instance, key)
    result = dg.materialize(ASSETS.all, selection=["trips_per_month_chart"], resources=resources, instance=instance)
    [chart] = result.asset_materializations_for_node("trips_per_month_chart")
    path = tmp_path / "lake" / "reports" / "trips_per_month.png"
    assert chart.metadata["uri"].value == str(path)
    assert chart.metadata["chart"].value.startswith("![trips per month](data:image/png;base64,iVBOR")
    assert "| 2020-10 |" in chart.metadata["trips_per_month"].value
    image = Image.open(path).convert("RGB")
    assert image.size == (1000, 500)

    def pixels_near(hex_color: str) -> int:
        target = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
        return sum(1 for p in image.getdata() if all(abs(a - b) < 30 for a, b in zip(p, target, strict=True)))

    drawn = {color: pixels_near(code) for color, code in COLOR_OF.items()}
    assert drawn["green"] > 50 and drawn["yellow"] > 50  # each loaded color drew its marker and legend
    assert drawn["fhv"] == 0  # fhv has no statistics yet: no line for it


def test_the_chart_before_any_statistics_is_drawn_empty(mirror, tmp_path, instance):
    """On the tlc source the grid upkeep records the cells before a color's first file as loaded,
    statistics included, before any month is loaded: the chart follows them, with no statistics
    table in the warehouse yet (the soak saw it fail on that)."""
    resources = local_resources(tmp_path, mirror)
    result = dg.materialize(ASSETS.all, selection=["trips_per_month_chart"], resources=resources, instance=instance)
    assert result.success
    [chart] = result.asset_materializations_for_node("trips_per_month_chart")
    assert chart.metadata["months_loaded"].value == 0
    assert chart.metadata["first_month"].value == "none loaded"
    assert Image.open(tmp_path / "lake" / "reports" / "trips_per_month.png").size == (1000, 500)


def test_statistics_without_the_zones_fail_at_once_naming_the_fix(mirror, tmp_path, instance):
    mirror.publish("yellow", "2020-07", YELLOW)
    resources = local_resources(tmp_path, mirror)
    assert dg.materialize(
        ASSETS.trips, partition_key="yellow|2020-07-01", resources=resources, instance=instance
    ).success
    started = time.monotonic()
    result = dg.materialize(
        ASSETS.all,
        selection=["monthly_trip_stats"],
        partition_key="yellow|2020-07-01",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success and time.monotonic() - started < 20  # no retries, no wait: no run loads them
    [message] = step_failure_messages(result)
    assert "partition yellow|2020-07-01: the warehouse has no table `zones`" in message
    assert "--select taxi/zones" in message and "analytics_automation" in message


def test_the_automation_sensor_requests_the_zones_on_a_fresh_instance(local_defs, instance):
    fresh = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)
    assert fresh.get_num_requested(ZONES_KEY) == 1
    assert fresh.total_requested == 1  # not the statistics: they wait for the zones


def test_the_automation_sensor_draws_the_chart_after_statistics_of_some_months(loaded, local_defs, instance):
    resources, _ = loaded
    before = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)  # the sensor's previous tick
    _stats(resources, instance, "green|2020-10-01")  # one partition of 93
    after = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(dg.AssetKey("trips_per_month_chart")) == 1
    assert after.get_num_requested(ZONES_KEY) == 0


def test_the_chart_waits_for_statistics_coming_in_the_same_tick(loaded, local_defs, instance):
    """One month's statistics are loaded while another month's slice is reloaded: the tick requests
    that month's statistics and not the chart beside them (drawn beside them, it missed that month
    and stayed so); the tick after those statistics draws it."""
    resources, _ = loaded
    before = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)
    _stats(resources, instance, "green|2020-10-01")
    assert dg.materialize(
        ASSETS.trips, partition_key="yellow|2020-07-01", resources=resources, instance=instance
    ).success
    tick = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=before.cursor)
    assert tick.get_requested_partitions(STATS) == {"yellow|2020-07-01"}
    assert tick.get_num_requested(dg.AssetKey("trips_per_month_chart")) == 0
    _stats(resources, instance, "yellow|2020-07-01")
    after = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=tick.cursor)
    assert after.get_num_requested(dg.AssetKey("trips_per_month_chart")) == 1
    assert after.total_requested == 1


@pytest.mark.parametrize(
    "broken, reason",
    [
        ("extra_columns", "columns LocationID, Borough, Zone, service_zone, extra1, extra2, expected"),
        ("too_many_rows", "300 rows with 300 distinct LocationIDs, expected 265"),
        ("a_million_rows", "over the limit of 1,048,576 (max_lookup_bytes)"),
        ("duplicate_ids", "265 rows with 264 distinct LocationIDs, expected 265"),
    ],
)
def test_a_bad_zone_lookup_fails_and_leaves_the_zones_table_as_it_was(
    loaded, mirror, tmp_path, instance, broken, reason
):
    resources, _ = loaded
    lines = (mirror.root / "misc" / "taxi_zone_lookup.csv").read_text().splitlines()
    if broken == "extra_columns":
        lines = [line + (",extra1,extra2" if i == 0 else ",1,2") for i, line in enumerate(lines)]
    elif broken in ("too_many_rows", "a_million_rows"):
        rows = 300 if broken == "too_many_rows" else 1_000_000
        lines = lines[:1] + [f'{i},"Queens","Zone {i}","Boro Zone"' for i in range(1, rows + 1)]
    else:
        lines[-1] = lines[-2]
    (mirror.root / "misc" / "taxi_zone_lookup.csv").write_text("\n".join(lines) + "\n")
    result = dg.materialize(
        ASSETS.all, selection=[ZONES_KEY], resources=resources, instance=instance, raise_on_error=False
    )
    assert not result.success
    [message] = step_failure_messages(result)
    assert "taxi zones: " in message and "misc/taxi_zone_lookup.csv" in message and reason in message, message
    assert "the zones table is unchanged" in message
    rows = _table(tmp_path, "SELECT count(*), count(DISTINCT LocationID), max(Zone) FROM main.zones")
    assert rows[0][:2] == (265, 265)  # the good lookup, whole


def test_the_automation_sensor_requests_statistics_only_once_the_zones_are_materialized(
    mirror, tmp_path, local_defs, instance
):
    """A slice reloaded while the zones are missing: the tick that requests the zones (again: the
    first run of them never happened) does not request the statistics with them (they load in a
    run of their own, which the statistics would wait for); the tick after the zones are loaded
    requests them."""
    mirror.publish("yellow", "2020-07", YELLOW)
    mirror.publish_zones()
    resources = local_resources(tmp_path, mirror)
    first = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)
    assert first.get_num_requested(ZONES_KEY) == 1  # requested; its run never happens (cancelled, say)
    assert dg.materialize(
        ASSETS.trips, partition_key="yellow|2020-07-01", resources=resources, instance=instance
    ).success
    again = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=first.cursor)
    assert again.get_num_requested(ZONES_KEY) == 1
    assert again.get_num_requested(STATS) == 0
    assert dg.materialize(ASSETS.all, selection=[ZONES_KEY], resources=resources, instance=instance).success
    loaded = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=again.cursor)
    assert loaded.get_requested_partitions(STATS) == {"yellow|2020-07-01"}
    assert loaded.get_num_requested(ZONES_KEY) == 0
