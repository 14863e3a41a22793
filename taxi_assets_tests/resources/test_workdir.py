"""WorkDir: a folder per run and process, removed at teardown; folders of dead processes swept."""

import subprocess
import sys

import dagster as dg

from taxi_assets.resources.workdir import WorkDir


def test_a_runs_folder_is_removed_when_its_resources_are_torn_down(tmp_path):
    seen = {}

    @dg.asset
    def makes_a_file(workdir: WorkDir) -> None:
        path = workdir.path("x.bin")
        path.write_bytes(b"partial")
        seen["path"] = path

    assert dg.materialize([makes_a_file], resources={"workdir": WorkDir(root=str(tmp_path))}).success
    assert seen["path"].parent.parent == tmp_path
    assert not seen["path"].parent.exists()


def test_folders_of_processes_that_died_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_folder = tmp_path / f"some-run.{dead.stdout.strip()}"
    dead_folder.mkdir()
    (dead_folder / "half-written.parquet").write_bytes(b"x" * 1000)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live_folder = tmp_path / f"other-run.{live.pid}"
        live_folder.mkdir()
        removed = WorkDir(root=str(tmp_path)).sweep()
        assert removed == [dead_folder]
        assert live_folder.exists() and not dead_folder.exists()
    finally:
        live.kill()
        live.wait()
