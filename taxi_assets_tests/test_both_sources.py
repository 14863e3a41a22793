"""Both sources in one process: `build_defs` builds the grid, the assets, the schedule and the
resources from its arguments, so nothing about the source is frozen when the code is imported."""

import duckdb
import pyarrow.parquet as pq
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.partitions import TripMonth
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.sources import RELEASES, TLC
from taxi_assets_tests.helpers import build_test_defs, real_rows, run_partition, step_failure_messages
from taxi_assets_tests.tlc.eras import ERAS, write_era


def _keys(defs) -> list[str]:
    return defs.resolve_job_def("trips_job").partitions_def.get_partition_keys()


def test_each_source_has_its_own_grid_and_schedule(local_env):
    releases, tlc = build_defs("local", RELEASES), build_defs("local", TLC)
    released = _keys(releases)
    assert len(released) == 93  # 2019-01 .. 2021-07 for yellow, green and fhv
    assert {key.split("|")[0] for key in released} == {"yellow", "green", "fhv"}
    published = _keys(tlc)
    assert "yellow|2011-01-01" in published and "fhvhv|2019-02-01" in published
    assert "yellow|2011-01-01" not in released and not any(key.startswith("fhvhv|") for key in released)
    assert set(released) < set(published)  # the TLC publishes every month the releases copied
    # The releases never change: only the tlc code location has the monthly schedule. Both have
    # the daily retention (taxi_assets/retention.py).
    assert sorted(s.name for s in releases.schedules) == ["retention_schedule"]
    assert sorted(s.name for s in tlc.schedules) == ["newest_month_schedule", "retention_schedule"]


def test_the_upstream_files_are_those_of_the_source_the_assets_are_built_for(monkeypatch, local_env):
    """One route: `build_defs` builds the `upstream_files` resource from its `Source`. TAXI_SOURCE
    is read when the code location loads (definitions.py), never again by the resource."""
    releases, tlc = build_defs("local", RELEASES), build_defs("local", TLC)
    monkeypatch.setenv("TAXI_SOURCE", "tlc")
    files = releases.resources["upstream_files"]
    assert files.source is RELEASES and tlc.resources["upstream_files"].source is TLC
    fhv = TripMonth.from_key("fhv|2019-01-01", RELEASES.colors)
    assert files.url_for(fhv).endswith("/fhv/fhv_tripdata_2019-01.csv.gz")
    assert tlc.resources["upstream_files"].url_for(fhv).endswith("/trip-data/fhv_tripdata_2019-01.parquet")
    with pytest.raises(ValueError, match=r"build it with UpstreamFiles.of\(source\)"):  # not from TAXI_SOURCE
        UpstreamFiles(base_url="http://127.0.0.1:1")


def test_run_config_of_the_upstream_files_keeps_their_source(mirror, local_env, instance, monkeypatch):
    """Dagster rebuilds a resource from run config that sets some of its fields, the others at their
    defaults: the source is not one of them, so it stays the one the assets were built for, whatever
    TAXI_SOURCE says by then."""
    green = real_rows("green_tripdata_2020-10_tail500.csv")
    mirror.publish("green", "2020-10", green)
    defs = build_test_defs("local", mirror)
    monkeypatch.setenv("TAXI_SOURCE", "tlc")
    files = {"base_url": mirror.base_url, "attempts": 2}
    result = run_partition(
        defs, "green|2020-10-01", instance, run_config={"resources": {"upstream_files": {"config": files}}}
    )
    assert result.success, step_failure_messages(result)
    assert (local_env / "lake/raw/green/green_tripdata_2020-10.csv.gz").exists()


def test_one_partition_of_each_source_through_the_whole_graph(mirror, tlc_mirror, local_env, instance):
    """A release CSV and a TLC Parquet file, by two code locations built in this one process,
    into one lake and one warehouse."""
    green = real_rows("green_tripdata_2020-10_tail500.csv")
    mirror.publish("green", "2020-10", green)
    era = next(e for e in ERAS if e.color == "fhvhv" and e.month == "2021-06")
    write_era(era, tlc_mirror.path("fhvhv", "2021-06"), rows=300)

    for defs, key in ((build_test_defs("local", mirror), "green|2020-10-01"),
                      (build_test_defs("local", tlc_mirror), "fhvhv|2021-06-01")):  # fmt: skip
        result = run_partition(defs, key, instance)
        assert result.success, step_failure_messages(result)

    lake = local_env / "lake"
    assert (lake / "raw/green/green_tripdata_2020-10.csv.gz").exists()  # each source's own raw format
    assert (lake / "raw/fhvhv/fhvhv_tripdata_2021-06.parquet").read_bytes() == tlc_mirror.path(
        "fhvhv", "2021-06"
    ).read_bytes()
    # Each file with its own source's pinned schema.
    assert pq.read_schema(lake / "data/green/green_tripdata_2020-10.parquet").equals(RELEASES.schemas["green"])
    assert pq.read_schema(lake / "data/fhvhv/fhvhv_tripdata_2021-06.parquet").equals(TLC.schemas["fhvhv"])
    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        slices = dict(conn.execute("SELECT color, count(*) FROM rides GROUP BY color").fetchall())
    assert slices == {"green": len(green) - 1, "fhvhv": 300}
