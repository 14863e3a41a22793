"""WorkDir: a folder per run and process, removed at teardown; folders of dead processes swept, only
the ones this project made (TAXI_WORK_DIR may be a shared folder); an unusable folder named."""

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.resources.workdir import WorkDir


def test_a_runs_folder_is_removed_when_its_resources_are_torn_down(tmp_path):
    seen = {}

    @dg.asset
    def makes_a_file(workdir: WorkDir) -> None:
        path = workdir.path("x.bin")
        path.write_bytes(b"partial")
        seen["path"] = path
        seen["mode"] = stat.S_IMODE(path.parent.stat().st_mode)

    assert dg.materialize([makes_a_file], resources={"workdir": WorkDir(root=str(tmp_path))}).success
    assert seen["path"].parent.parent == tmp_path
    assert seen["mode"] == 0o700  # private to its owner, whatever the umask
    assert not seen["path"].parent.exists()


# A process of this project that writes into its work folder, says so, and waits to be killed.
_WRITER = """
import sys, time
from pathlib import Path
from taxi_assets.resources.workdir import WorkDir
path = WorkDir(root=sys.argv[1]).path("half-written.parquet")
path.write_bytes(b"x" * 1000)
print(path, flush=True)
time.sleep(60)
"""

# The same for a download into a temporary input folder (LakeFile.local_copy, on the gcp target).
_DOWNLOADER = """
import time
from taxi_assets.io_manager import LakeFile

def fetch(dest):
    dest.write_bytes(b"x" * 1000)
    print(dest, flush=True)
    time.sleep(60)
    return dest

stored = LakeFile(key="raw/yellow/x.csv.gz", uri="gs://b/raw/yellow/x.csv.gz", size=1000, generation=1, fetch=fetch)
with stored.local_copy():
    pass
"""


@contextlib.contextmanager
def _writing(script: str, *args: str, env: dict | None = None):
    """A real process running `script`; yields (process, the path it wrote); SIGKILLed on exit."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=os.getcwd(),
    )
    try:
        line = process.stdout.readline().strip()
        assert line, "the writer printed nothing"
        yield process, Path(line)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def _killed(script: str, *args: str, env: dict | None = None):
    with _writing(script, *args, env=env) as (process, path):
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.pid, path


def test_folders_of_killed_processes_are_swept_and_live_ones_kept(tmp_path):
    dead_pid, dead_file = _killed(_WRITER, str(tmp_path))
    assert dead_file.parent.parent == tmp_path and dead_file.is_file()
    with _writing(_WRITER, str(tmp_path)) as (_, live_file):
        removed = WorkDir(root=str(tmp_path)).sweep()
        assert removed == [dead_file.parent]
        assert live_file.is_file() and not dead_file.parent.exists()


def test_the_sweep_leaves_folders_it_did_not_make_in_a_shared_work_folder(tmp_path, monkeypatch):
    """TAXI_WORK_DIR is a shared folder: a run sweeps a killed process's folder and its download,
    and nothing else: not `photos.12345`, `release.2024`, a dead pid's folder by another name, nor
    one that only looks like ours (the name without the marker)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    dead_pid, dead_file = _killed(_WRITER, str(shared))
    _, download = _killed(_DOWNLOADER, env={"TAXI_WORK_DIR": str(shared)})
    assert download.parent.parent == shared and download.is_file()
    foreign = [
        shared / "photos.12345",
        shared / "release.2024",
        shared / f"backup.{dead_pid}",
        shared / f"taxi-assets-lookalike.{dead_pid}",
    ]
    for folder in foreign:
        folder.mkdir()
        (folder / "precious.txt").write_text("keep me")
    (shared / f"notes.{dead_pid}").write_text("a file, not a folder")
    monkeypatch.setenv("TAXI_WORK_DIR", str(shared))

    @dg.asset
    def uses_the_work_folder(workdir: WorkDir) -> None:
        workdir.path("x.bin").write_bytes(b"x")

    assert dg.materialize([uses_the_work_folder], resources={"workdir": WorkDir()}).success
    assert not dead_file.parent.exists() and not download.parent.exists()
    for folder in foreign:
        assert (folder / "precious.txt").read_text() == "keep me"
    assert (shared / f"notes.{dead_pid}").is_file()
    assert sorted(p.name for p in shared.iterdir()) == sorted([f"notes.{dead_pid}"] + [f.name for f in foreign])


def _failure_messages(result) -> list[str]:
    """Every error the run recorded, with its causes (in process, a resource that fails to start
    fails the run; under the multiprocess executor, the step)."""
    messages = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            messages.append(error.message.strip())
            error = error.cause
    return messages


@contextlib.contextmanager
def _unwritable(folder):
    """`folder` made unwritable for real: read-only mode, and immutable when running as root (whom
    modes do not stop)."""
    folder.chmod(0o500)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        immutable = False
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder unwritable for this user here")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


@pytest.mark.parametrize("where", ["the folder", "below it"])
def test_an_unwritable_work_folder_fails_at_once_naming_it_and_the_setting(tmp_path, monkeypatch, where):
    locked = tmp_path / "locked"
    locked.mkdir()
    work = locked if where == "the folder" else locked / "work"
    monkeypatch.setenv("TAXI_WORK_DIR", str(work))
    ran = []

    @dg.asset
    def uses_the_work_folder(workdir: WorkDir) -> None:
        ran.append(True)
        workdir.path("x.bin").write_bytes(b"x")

    with _unwritable(locked):
        result = dg.materialize([uses_the_work_folder], resources={"workdir": WorkDir()}, raise_on_error=False)
    assert not result.success and not ran
    message = "\n".join(_failure_messages(result))
    assert f"cannot use the work folder {work} (TAXI_WORK_DIR)" in message
    assert "set TAXI_WORK_DIR to a folder this user can write" in message
    assert "Traceback" not in message and "PermissionError" not in message
