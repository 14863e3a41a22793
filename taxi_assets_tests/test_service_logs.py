"""`make serve` and `make worker` (deploy/service_logs.py, deploy/disk_floor.py): a child's output
comes through a pipe into a log that rotates past a size limit, and a start-up warning names a
folder with little free space. Fast: real processes, no PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from service_logs import RotatingLog, pump  # noqa: E402  (deploy/ is a folder of scripts, not a package)

LINE = "line {:05d} " + "x" * 88  # 100 bytes with its newline


def test_a_log_past_its_size_limit_is_rotated_keeping_a_few_files(tmp_path):
    path = tmp_path / "daemon.log"
    path.write_text("from a previous start\n")
    child = subprocess.Popen(
        [sys.executable, "-c", f"for i in range(300): print({LINE!r}.format(i), flush=True)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    thread = pump(child.stdout, RotatingLog(path, max_bytes=5000, keep=3))
    assert child.wait(timeout=60) == 0
    thread.join(timeout=30)
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["daemon.log", "daemon.log.1", "daemon.log.2", "daemon.log.3"]
    assert all(p.stat().st_size <= 5000 for p in files)
    # The newest lines, whole and in order across the files (oldest file first); older ones dropped.
    lines = [line for p in reversed(files) for line in p.read_text().splitlines()]
    assert lines == [LINE.format(i) for i in range(300 - len(lines), 300)]
    assert len(lines) > 3 * 49  # three full files and the current one


@pytest.mark.parametrize("script", ["serve.py", "worker.py"])
def test_start_warns_in_one_line_when_a_folder_has_less_than_the_floor(tmp_path, script):
    env = {
        **os.environ,
        "DAGSTER_PG_URL": "mysql://not-postgres/dagster",  # refused later: the start stops there
        "DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "TAXI_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TAXI_WORK_DIR", None)

    def start(floor_mb: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / script)],
            env={**env, "TAXI_MIN_FREE_MB": floor_mb},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return [line for line in done.stderr.splitlines() if "low disk space" in line]

    warned = start(str(10**12))  # a floor no disk here reaches
    assert len(warned) == 1, warned  # one filesystem: one line naming the three folders
    assert warned[0].startswith("WARNING: low disk space: ") and "bytes free in " in warned[0]
    for name in (f"DAGSTER_HOME {tmp_path / 'home'}", f"TAXI_DATA_DIR {tmp_path / 'data'}", "the work folder"):
        assert name in warned[0]
    assert start("0") == []
