"""A full disk is said, naming the folder and the bytes free: a run whose compute logs (under
DAGSTER_HOME) have no room fails at its start (Dagster's capture would lose its output in
silence), and a service log that cannot be written is reported by `make serve` on its stderr.
Real tmpfs mounts (root only: skipped otherwise, saying so)."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taxi_assets.compute_logs import COMPUTE_LOG_FLOOR_BYTES
from taxi_assets_tests.disks import small_tmpfs
from taxi_assets_tests.helpers import fhv_month

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from service_logs import RotatingLog  # noqa: E402  (deploy/ is a folder of scripts, not a package)


@pytest.fixture
def small_mount(tmp_path):
    """An 8 MB tmpfs, unmounted after the test."""
    with small_tmpfs(tmp_path / "small", "8m") as mount:
        yield mount


def _fill(mount: Path, leave: int) -> Path:
    filler = mount / "filler"
    filler.write_bytes(b"\0" * max(shutil.disk_usage(mount).free - leave, 0))
    return filler


def _materialize(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = ["asset", "materialize", "-m", "taxi_assets.definitions", "--select", "raw_trips"]
    return subprocess.run(
        [sys.executable, "-m", "dagster", *command, "--partition", "fhv|2019-01-01"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # two CLI runs: about 20 s here
def test_a_run_whose_compute_logs_have_no_room_fails_naming_the_folder(mirror, local_env, tmp_path, small_mount):
    mirror.publish("fhv", "2019-01", fhv_month("2019-01"))
    home = small_mount  # DAGSTER_HOME on the tmpfs; run storage (SQLite) elsewhere, as PostgreSQL would be
    (home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'db'}\ntelemetry:\n  enabled: false\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    filler = _fill(home, leave=COMPUTE_LOG_FLOOR_BYTES // 4)

    full = _materialize(env)
    assert full.returncode != 0
    free = shutil.disk_usage(home).free
    assert "ComputeLogsDiskFull: the disk of this run's compute logs is full" in full.stderr, full.stderr[-3000:]
    assert f"{free:,} bytes free in {home} (the logs go to {home / 'storage'}/" in full.stderr
    assert not list((local_env / "lake").rglob("*.csv.gz"))  # no step ran

    filler.unlink()
    done = _materialize(env)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = list((home / "storage").rglob("*.err")) + list((home / "storage").rglob("*.out"))
    assert sum(p.stat().st_size for p in logs) > 0  # this time the run's output was kept


def test_a_service_log_that_cannot_be_written_is_said_then_resumes(small_mount):
    report = io.StringIO()
    log = RotatingLog(small_mount / "daemon.log", max_bytes=1 << 20, keep=2, report=report)
    log.write(b"before\n")
    filler = _fill(small_mount, leave=0)
    for _ in range(100):
        log.write(b"x" * 1000 + b"\n")  # 100 KB that do not fit
    said = report.getvalue().splitlines()
    assert len(said) == 1, said  # once, not per line
    assert said[0].startswith(f"cannot write {small_mount / 'daemon.log'}: No space left on device;")
    assert f"bytes free in {small_mount}" in said[0]

    filler.unlink()
    log.write(b"after\n")
    log.close()
    text = (small_mount / "daemon.log").read_text()
    assert text.startswith("before\n") and text.endswith("after\n")
    lost = text.splitlines()[-2]
    assert lost.startswith("[") and "bytes of output were lost" in lost
    assert "written again" in report.getvalue()
