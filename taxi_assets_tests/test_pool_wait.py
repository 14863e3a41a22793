"""A step waiting for a slot of its pool sleeps until its next claim instead of spinning (Dagster
1.13 busy-waits there: taxi_assets/pool_wait.py), in a real `dagster asset materialize` process on
the package's own instance config."""

import os
import shutil
import time
from pathlib import Path

import dagster as dg

from taxi_assets_tests.conftest import real_rows
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
