"""Faults of a long-running deployment on the local target, injected for real: SIGKILL of a run's
process mid-parse and mid-load, two writers at once, a full disk. Each run is a
`dagster asset materialize` process, as a user or the daemon's run worker would start it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from taxi_assets_harness.graphql import wait_until
from taxi_assets_tests.disks import small_tmpfs
from taxi_assets_tests.helpers import real_rows

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
YELLOW = real_rows("yellow_tripdata_2021-01_head3000.csv")


def _month(copies: int) -> list[str]:
    """A yellow January of 3000 x copies rows (the real head, repeated)."""
    return YELLOW[:1] + YELLOW[1:] * copies


class Runs:
    """`dagster asset materialize` processes on one data folder and one instance."""

    def __init__(self, tmp_path: Path, mirror):
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        # Create the instance's storage once: processes starting on an empty DAGSTER_HOME at the
        # same moment race to create its SQLite schema (alembic: "more than one head present").
        dg.DagsterInstance.from_config(str(self.home)).dispose()
        self.env = {
            **os.environ,
            "TAXI_TARGET": "local",
            "TAXI_DATA_DIR": str(self.data),
            "TAXI_SOURCE_URL": mirror.base_url,
            "DAGSTER_HOME": str(self.home),
        }
        self.count = 0

    def start(self, key: str, config: str | None = None) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        log = self.tmp / f"run{self.count}.log"
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
        command += ["--select", "*bq_rides_table", "--partition", key] + (["--config-json", config] if config else [])
        with open(log, "wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return process, log

    def run(self, key: str, config: str | None = None) -> tuple[int, str]:
        process, log = self.start(key, config)
        return process.wait(timeout=300), log.read_text()

    def slice_rows(self, ym: str = "2021-01") -> int:
        with duckdb.connect(str(self.data / "warehouse.duckdb"), read_only=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM rides WHERE color = 'yellow' AND strftime(month, '%Y-%m') = ?", [ym]
            ).fetchone()[0]

    def published(self, ym: str = "2021-01") -> Path:
        return self.data / "lake" / "data" / "yellow" / f"yellow_tripdata_{ym}.parquet"

    def leftovers(self) -> list[Path]:
        """Files a run left behind: work folders, temp files in the lake."""
        work = list((self.data / "work").iterdir()) if (self.data / "work").exists() else []
        return work + [p for p in (self.data / "lake").rglob("*") if p.name.endswith(".tmp")]


def _kill_when(process: subprocess.Popen, ready, what: str) -> None:
    wait_until(lambda: process.poll() is not None or ready(), 120, what, interval=0.02)
    assert process.poll() is None, f"the run ended before {what}"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_run_killed_mid_parse_and_mid_load_leaves_old_or_new_never_a_part(mirror, tmp_path):
    runs = Runs(tmp_path, mirror)
    mirror.publish("yellow", "2021-01", _month(1))
    code, log = runs.run("yellow|2021-01-01")
    assert code == 0, log[-3000:]
    old_bytes = runs.published().read_bytes()

    # Killed while clean_trips writes Parquet: the published file and the slice stay the old ones.
    mirror.publish("yellow", "2021-01", _month(100))
    process, _ = runs.start("yellow|2021-01-01")
    _kill_when(
        process, lambda: list((runs.data / "work").glob("*/yellow_tripdata_2021-01.parquet")), "clean_trips writes"
    )
    assert runs.published().read_bytes() == old_bytes
    assert runs.slice_rows() == 3000
    assert runs.leftovers(), "the killed run's work folder is still there (until the next run sweeps it)"

    # The next run sweeps it and completes with exact counts.
    code, log = runs.run("yellow|2021-01-01")
    assert code == 0, log[-3000:]
    assert pq.read_metadata(runs.published()).num_rows == runs.slice_rows() == 300_000
    assert runs.leftovers() == []

    # Killed while bq_rides_table loads: the slice is the old one or the new one, never a part.
    mirror.publish("yellow", "2021-01", _month(60))
    process, log_path = runs.start("yellow|2021-01-01")
    _kill_when(process, lambda: 'Started execution of step "bq_rides_table"' in log_path.read_text(), "the load")
    assert runs.slice_rows() in (300_000, 180_000)
    code, log = runs.run("yellow|2021-01-01")
    assert code == 0, log[-3000:]
    assert runs.slice_rows() == pq.read_metadata(runs.published()).num_rows == 180_000
    assert runs.leftovers() == []


def test_two_writers_at_once_wait_for_the_warehouse_lock(mirror, tmp_path):
    """Two CLI runs, no daemon, no pool: DuckDB takes one writer; both wait their turn."""
    runs = Runs(tmp_path, mirror)
    mirror.publish("yellow", "2021-01", _month(1))
    mirror.publish("yellow", "2020-07", real_rows("yellow_tripdata_2020-07_sample266.csv"))
    runs.data.mkdir()
    # Hold the warehouse's write lock from here, as a long load in another process would.
    holder = duckdb.connect(str(runs.data / "warehouse.duckdb"))
    started = [runs.start("yellow|2021-01-01"), runs.start("yellow|2020-07-01"), runs.start("yellow|2021-01-01")]
    try:
        for _, log in started:
            wait_until(lambda log=log: "waiting for the warehouse lock" in log.read_text(), 120, "a logged wait")
    finally:
        holder.close()
    for process, log in started:
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert runs.slice_rows("2021-01") == 3000  # the same partition twice at once: one copy
    assert runs.slice_rows("2020-07") == 266


def test_a_lock_held_too_long_fails_clearly_after_the_bound(mirror, tmp_path):
    runs = Runs(tmp_path, mirror)
    mirror.publish("yellow", "2020-07", real_rows("yellow_tripdata_2020-07_sample266.csv"))
    runs.data.mkdir()
    holder = duckdb.connect(str(runs.data / "warehouse.duckdb"))
    try:
        code, log = runs.run(
            "yellow|2020-07-01", '{"resources": {"warehouse": {"config": {"lock_timeout_seconds": 3}}}}'
        )
    finally:
        holder.close()
    assert code != 0
    assert "partition yellow|2020-07-01" in log and "warehouse.duckdb is locked by another process" in log
    assert "gave up after 3 s" in log


@pytest.fixture
def small_disk(tmp_path):
    """TAXI_DATA_DIR on a 3 MB tmpfs: what a full disk looks like to the lake and the warehouse."""
    with small_tmpfs(tmp_path / "data", "3m") as mount:
        yield mount


def test_a_full_disk_names_the_path_and_keeps_the_previous_files(mirror, tmp_path, small_disk):
    runs = Runs(tmp_path, mirror)
    mirror.publish("yellow", "2020-07", real_rows("yellow_tripdata_2020-07_sample266.csv"))
    code, log = runs.run("yellow|2020-07-01")
    assert code == 0, log[-3000:]
    before = {p: p.read_bytes() for p in (runs.data / "lake").rglob("*") if p.is_file()}
    mirror.publish("yellow", "2021-01", _month(40))  # 120k rows: 1.4 MB gzipped

    # The lake's disk fills up during the download.
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - 300_000))
    code, log = runs.run("yellow|2021-01-01")
    assert code != 0
    assert "partition yellow|2021-01-01: cannot write" in log and "No space left on device" in log
    assert str(runs.data / "work") in log and "yellow_tripdata_2021-01.csv.gz" in log  # the path
    assert f"bytes free in {runs.data / 'work'}" in log  # and the room left there
    assert {p: p.read_bytes() for p in before} == before  # the previous good files, unchanged
    assert not list((runs.data / "lake").rglob("*2021-01*"))  # nothing half-written in the lake
    assert runs.leftovers() == []

    # With room for the lake but not for the warehouse's growth, DuckDB fails at its checkpoint.
    filler.unlink()
    code, log = runs.run("yellow|2021-01-01")
    assert code != 0
    assert f"partition yellow|2021-01-01: cannot write {runs.data / 'warehouse.duckdb'}: No space left on device" in log
    assert f"bytes free in {runs.data}; the previous files are kept" in log
    assert runs.slice_rows("2020-07") == 266  # the other slice is whole
    assert runs.slice_rows("2021-01") in (0, 120_000)  # this one: old (none) or new, never a part
    assert runs.leftovers() == []
