"""The month x color grid and how a key is read."""

import datetime as dt

import dagster as dg
import pytest

from taxi_assets.partitions import TripMonth, colors_of, trip_partitions
from taxi_assets.sources import RELEASES, TLC

COLORS = RELEASES.colors


def test_partition_grid_is_month_by_color_with_color_first_keys():
    grid = trip_partitions(RELEASES)
    keys = grid.get_partition_keys(current_time=dt.datetime(2026, 11, 26))
    assert len(keys) == 31 * 3  # 2019-01 .. 2021-07 for each color, whatever today is
    assert "yellow|2021-01-01" in keys
    assert set(colors_of(grid)) == {"yellow", "green", "fhv"}
    assert set(colors_of(trip_partitions(TLC))) == {"yellow", "green", "fhv", "fhvhv"}


def test_trip_month_reads_a_key():
    month = TripMonth.from_key("fhv|2019-02-01", COLORS)
    assert (month.color, month.month, month.ym) == ("fhv", dt.date(2019, 2, 1), "2019-02")
    assert month.file_stem == "fhv_tripdata_2019-02"
    assert month.next_month == dt.date(2019, 3, 1)
    assert TripMonth.from_key("yellow|2020-12-01", COLORS).next_month == dt.date(2021, 1, 1)
    assert TripMonth.from_key(dg.MultiPartitionKey({"color": "fhv", "month": "2019-02-01"}), COLORS) == month
    assert str(month) == month.key == "fhv|2019-02-01"


@pytest.mark.parametrize(
    "key",
    [
        "purple|2019-01-01",
        "../../etc|2019-01-01",
        "yellow|2019-01-15",
        "yellow|2019-13-01",
        "yellow",
        "yellow' OR TRUE --|2019-01-01",  # a quote never reaches the warehouse's SQL
    ],
)
def test_crafted_keys_are_refused(key):
    with pytest.raises((ValueError, dg.DagsterInvalidInvocationError, dg.DagsterInvariantViolationError)):
        TripMonth.from_key(key, COLORS)


def test_a_run_is_one_partition():
    assert TripMonth.only(["green|2020-10-01"], COLORS) == TripMonth.from_key("green|2020-10-01", COLORS)
    for keys in ([], ["green|2020-10-01", "green|2020-11-01"]):
        with pytest.raises(dg.Failure, match=f"one month x color partition per run, got {len(keys)}"):
            TripMonth.only(keys, COLORS)


def test_the_grid_ends_at_the_releases_last_month_or_taxi_last_month(tmp_path):
    """Read when the code location loads: a fresh interpreter, as a code server would start."""
    import os
    import subprocess
    import sys

    count = (
        "from taxi_assets.definitions import defs; "
        "k = defs.resolve_job_def('trips_job').partitions_def.get_partition_keys(); print(len(k), k[-1])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TAXI_LAST_MONTH", "TAXI_SOURCE")}
    default = subprocess.run([sys.executable, "-c", count], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["93", "fhv|2021-07-01"]  # 2019-01 .. 2021-07, three colors
    moved = subprocess.run(
        [sys.executable, "-c", count], env={**env, "TAXI_LAST_MONTH": "2021-12"}, capture_output=True, text=True
    )
    assert moved.stdout.split() == ["108", "fhv|2021-12-01"]
    bad = subprocess.run(
        [sys.executable, "-c", count], env={**env, "TAXI_LAST_MONTH": "July"}, capture_output=True, text=True
    )
    assert "TAXI_LAST_MONTH must be a month like 2021-07, got 'July'" in bad.stderr
