"""A step waiting for a slot of its pool sleeps until its next claim instead of spinning (Dagster
1.13 busy-waits there: taxi_assets/pool_wait.py), in a real `dagster asset materialize` process on
the package's own instance config."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from taxi_assets_tests.conftest import real_rows

ROOT = Path(__file__).resolve().parents[1]
HOLDER_RUN, HOLDER_STEP = "another-run", "another-step"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def test_a_step_waiting_for_its_pool_sleeps_and_runs_once_the_slot_is_free(mirror, local_env, tmp_path, monkeypatch):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "taxi_assets" / "dagster.yaml", home / "dagster.yaml")  # pools: one slot each
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("upstream", 1)
        assert storage.claim_concurrency_slot("upstream", HOLDER_RUN, HOLDER_STEP).is_claimed
        log = tmp_path / "run.log"
        run = subprocess.Popen(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
            + ["--select", "raw_trips", "--partition", "green|2020-10-01"],
            cwd=ROOT,
            env={**os.environ},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(lambda: storage.get_concurrency_info("upstream").pending_step_count, 120, "a waiting step")
            before, started = _cpu_seconds(run.pid), time.monotonic()
            time.sleep(4)
            used, waited = _cpu_seconds(run.pid) - before, time.monotonic() - started
            # Spinning took a core: about 4 s of CPU in these 4 s. Sleeping between claims: nearly none.
            assert used < 0.25 * waited, f"the waiting run used {used:.2f} s of CPU in {waited:.1f} s"
            assert run.poll() is None  # still waiting: the slot is held
            storage.free_concurrency_slot_for_step(HOLDER_RUN, HOLDER_STEP)
            run.wait(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
    output = log.read_text()
    assert run.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert (local_env / "lake" / "raw" / "green" / "green_tripdata_2020-10.csv.gz").exists()
