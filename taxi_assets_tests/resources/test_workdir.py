"""WorkDir: a folder per run and process, removed at teardown; folders of dead processes swept, only
the ones this project made and only by their own host (TAXI_WORK_DIR may be a shared folder, and
Celery workers on several hosts share it); an unusable folder named."""

import ast
import contextlib
import os
import shutil
import signal
import socket
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


def _writer_pid(process: subprocess.Popen, host: list[str] | None) -> int:
    """The process id of the writer itself: `process`, or the child `nsenter` forked into a host."""
    if not host:
        return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@contextlib.contextmanager
def _writing(script: str, *args: str, env: dict | None = None, host: list[str] | None = None):
    """A real process running `script` (on `host`, a command prefix from `_host`); yields (its
    process id, the path it wrote); SIGKILLed on exit."""
    process = subprocess.Popen(
        [*(host or []), sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=os.getcwd(),
    )
    pid = None
    try:
        line = process.stdout.readline().strip()
        assert line, "the writer printed nothing"
        pid = _writer_pid(process, host)
        yield pid, Path(line)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()
        process.stdout.close()


def _killed(script: str, *args: str, env: dict | None = None, host: list[str] | None = None):
    with _writing(script, *args, env=env, host=host) as (pid, path):
        os.kill(pid, signal.SIGKILL)
    return pid, path


def test_folders_of_killed_processes_are_swept_and_live_ones_kept(tmp_path):
    dead_pid, dead_file = _killed(_WRITER, str(tmp_path))
    assert dead_file.parent.parent == tmp_path and dead_file.is_file()
    with _writing(_WRITER, str(tmp_path)) as (live_pid, live_file):
        assert live_file.parent.name.endswith(f"@{socket.gethostname()}.{live_pid}.{_started(live_pid)}")
        removed = WorkDir(root=str(tmp_path)).sweep()
        assert removed == [dead_file.parent]
        assert live_file.is_file() and not dead_file.parent.exists()


def _started(pid: int) -> str:
    """Process `pid`'s start time, clock ticks after boot (proc(5), field 22)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_a_folder_whose_process_id_now_belongs_to_another_process_is_swept(tmp_path):
    """A process id is reused: the folder of a killed writer whose id a later process got (the
    folder renamed to that id, the start time its writer's) is swept; the later process's own
    folder is kept."""
    dead_pid, dead_file = _killed(_WRITER, str(tmp_path))
    with _writing(_WRITER, str(tmp_path)) as (later_pid, later_file):
        reused = dead_file.parent.with_name(dead_file.parent.name.replace(f".{dead_pid}.", f".{later_pid}."))
        assert reused != dead_file.parent and _started(later_pid) not in reused.name
        dead_file.parent.rename(reused)
        assert WorkDir(root=str(tmp_path)).sweep() == [reused]
        assert later_file.is_file() and not reused.exists()


# A process of this project that sweeps the work folder and prints what it removed.
_SWEEPER = """
import sys
from taxi_assets.resources.workdir import WorkDir
print(repr([str(path) for path in WorkDir(root=sys.argv[1]).sweep()]), flush=True)
"""


@contextlib.contextmanager
def _host(name: str):
    """A host of its own for the processes started with the command prefix it yields: its own
    hostname (UTS namespace) and its own process ids (PID namespace, /proc mounted for it), on this
    machine's filesystem. Needs root and Linux namespaces; skipped without them."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs Linux namespaces (unshare, nsenter)")
    holder = subprocess.Popen(
        ["unshare", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc"]
        + ["sh", "-c", f"hostname {name} && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if holder.stdout.readline().strip() != "ready":
            pytest.skip(f"cannot make a host of its own here: {holder.stderr.read().strip()}")
        first = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()[0]
        yield ["nsenter", f"--target={first}", "--uts", "--pid", "--mount", "--"]
    finally:
        holder.kill()  # --kill-child: the host's first process dies, and every process of the host with it
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()


def _swept_on(host: list[str], root: Path) -> list[Path]:
    done = subprocess.run([*host, sys.executable, "-c", _SWEEPER, str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return [Path(path) for path in ast.literal_eval(done.stdout.strip())]


def test_workers_on_two_hosts_sharing_a_work_folder_sweep_only_their_own_hosts_dead_folders(tmp_path):
    """Two hosts (each its own hostname and process ids) share one work folder, as Celery workers
    on the local target share TAXI_DATA_DIR: a sweep on one host removes the folder of its own host's
    killed writer, never a folder of the other host, dead or alive there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    with _host("worker-a") as on_a, _host("worker-b") as on_b:
        _, a_dead = _killed(_WRITER, str(shared), host=on_a)
        _, b_dead = _killed(_WRITER, str(shared), host=on_b)
        with (
            _writing(_WRITER, str(shared), host=on_a) as (_, a_live),
            _writing(_WRITER, str(shared), host=on_b) as (_, b_live),
        ):
            for path, host in ((a_dead, "worker-a"), (b_dead, "worker-b"), (a_live, "worker-a"), (b_live, "worker-b")):
                assert path.parent.parent == shared and f"@{host}." in path.parent.name and path.is_file()
            assert _swept_on(on_a, shared) == [a_dead.parent]
            assert b_dead.is_file() and a_live.is_file() and b_live.is_file()
            assert _swept_on(on_b, shared) == [b_dead.parent]
            assert a_live.is_file() and b_live.is_file()
            assert sorted(shared.iterdir()) == sorted([a_live.parent, b_live.parent])


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
        shared / f"taxi-assets-lookalike@{socket.gethostname()}.{dead_pid}.1",
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
