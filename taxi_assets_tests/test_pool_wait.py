"""A step waiting for a slot of its pool sleeps until its next claim instead of spinning (Dagster
1.13 busy-waits there: POOL_WAIT in taxi_assets/dagster_internals.py), and a statistics step waiting for the zones does
not hold the `warehouse` slot meanwhile, in real `dagster asset materialize` processes on the
package's own instance config."""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from taxi_assets.assets import build_assets
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows
from taxi_assets_tests.pools import ROOT, free_slot, run_blocked_on_pool


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_step_waiting_for_its_pool_sleeps_and_runs_once_the_slot_is_free(mirror, local_env, tmp_path, monkeypatch):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "taxi_assets" / "dagster.yaml", home / "dagster.yaml")  # pools: one slot each
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    log = tmp_path / "run.log"
    with (
        dg.DagsterInstance.get() as instance,
        run_blocked_on_pool(instance, "upstream", "raw_trips", "green|2020-10-01", log, timeout=120) as run,
    ):
        before, started = _cpu_seconds(run.pid), time.monotonic()
        time.sleep(4)
        used, waited = _cpu_seconds(run.pid) - before, time.monotonic() - started
        # Spinning took a core: about 4 s of CPU in these 4 s. Sleeping between claims: nearly none.
        assert used < 0.25 * waited, f"the waiting run used {used:.2f} s of CPU in {waited:.1f} s"
        assert run.poll() is None  # still waiting: the slot is held
        free_slot(instance)
        run.wait(timeout=120)
    output = log.read_text()
    assert run.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert (local_env / "lake" / "raw" / "green" / "green_tripdata_2020-10.csv.gz").exists()


@contextlib.contextmanager
def _materialize(select: list[str], log: Path):
    """`dagster asset materialize -m taxi_assets.definitions --select SELECT...` in a process of its
    own (output to `log`); killed if still running on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions", "--select", *select],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _exits_within(process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return process.poll() is not None


@pytest.mark.slow
def test_statistics_waiting_for_the_zones_leave_the_warehouse_slot_to_a_load(mirror, local_env, tmp_path, monkeypatch):
    """The zones are missing and their run is going (its download held by the mirror) when a
    statistics step and then a load wait for the one `warehouse` slot: the statistics step gets it
    first, gives it back without waiting for the zones, and the load runs at once; once the zones
    are in, the statistics run and come out right."""
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    mirror.publish("yellow", "2020-07", real_rows("yellow_tripdata_2020-07_sample266.csv"))
    mirror.publish_zones()
    zones_released = mirror.hold_zones()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "taxi_assets" / "dagster.yaml", home / "dagster.yaml")  # pools: one slot each
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    resources = local_resources(local_env, mirror)  # the folders TAXI_DATA_DIR gives the runs below
    assets = build_assets(RELEASES, "local")
    stats_key, load_key = "green|2020-10-01", "yellow|2020-07-01"
    logs = {name: tmp_path / f"{name}.log" for name in ("stats", "load", "zones")}
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize(assets.trips, partition_key=stats_key, resources=resources, instance=instance).success
        upstream = ["raw_trips", "clean_trips", "gcs_parquet"]
        assert dg.materialize(
            assets.trips, selection=upstream, partition_key=load_key, resources=resources, instance=instance
        ).success
        storage = instance.event_log_storage
        with (
            run_blocked_on_pool(instance, "warehouse", "monthly_trip_stats", stats_key, logs["stats"]) as stats,
            _materialize(["bq_rides_table", "--partition", load_key], logs["load"]) as load,
            _materialize(["taxi/zones"], logs["zones"]) as zones,
        ):
            deadline = time.monotonic() + 180
            while storage.get_concurrency_info("warehouse").pending_step_count < 2 or not any(
                request.endswith("/misc/taxi_zone_lookup.csv") for request in mirror.requests
            ):
                assert load.poll() is None and zones.poll() is None, logs["load"].read_text()[-3000:]
                assert time.monotonic() < deadline, "the load never waited for the slot, or the zones never started"
                time.sleep(0.1)
            free_slot(instance)  # the statistics step waited first: it gets the slot first
            freed = time.monotonic()
            stats_log = logs["stats"]
            assert _exits_within(load, 60), f"the load waited behind the statistics:\n{stats_log.read_text()[-3000:]}"
            load_seconds = time.monotonic() - freed
            assert load.returncode == 0, logs["load"].read_text()[-3000:]
            assert stats.poll() is None and zones.poll() is None  # both still waiting for the zones
            assert "is loading the zone lookup into `zones`: looking again in" in logs["stats"].read_text()
            zones_released.set()
            assert _exits_within(zones, 120) and zones.returncode == 0, logs["zones"].read_text()[-3000:]
            assert _exits_within(stats, 120) and stats.returncode == 0, logs["stats"].read_text()[-3000:]
    print(f"the load finished {load_seconds:.1f} s after the statistics step got the slot")
    with duckdb.connect(str(local_env / "warehouse.duckdb"), read_only=True) as conn:
        [(green_trips,)] = conn.execute(
            "SELECT sum(trips) FROM monthly_trip_stats WHERE color = 'green' AND strftime(month, '%Y-%m') = '2020-10'"
        ).fetchall()
        [(yellow_rides,)] = conn.execute(
            "SELECT count(*) FROM rides WHERE color = 'yellow' AND strftime(month, '%Y-%m') = '2020-07'"
        ).fetchall()
    assert green_trips == 500 and yellow_rides == 266
