"""Local disk for files in the making: a download being written, Parquet being encoded.

Each process of a run gets its own folder, `{root}/taxi-assets-{run_id}@{host}.{pid}.{start}`,
private to its owner (0700) and marked as this project's by a file inside it (`.taxi-assets-work`).
An asset writes its output file there and returns it; the lake IO manager then moves it into the
lake (or uploads it, and may keep it for the next step of the same process). The folder goes when
the run's resources are torn down, and folders of processes that no longer run (a killed worker) go
at the next start on the same host: a crash never leaves files that grow the disk across retries.

The folder names its owner: the host, the process id and the process's start time (clock ticks
after boot, from /proc; 0 where there is none), so a process id reused by a later process does not
keep a dead one's folder. On the local target, Celery workers on several hosts share the work
folder (inside `TAXI_DATA_DIR`), and no host can see another's processes: a sweep removes only
folders of its own host. Folders of a host that never comes back stay (remove them by hand).

The sweep removes only folders this project made: the name prefix, the marker file, and an owner
on this host that is no longer running. `TAXI_WORK_DIR` may be a shared folder: anything else in it
(a `photos.12345/`, a `release.2024/`, a folder of another host) is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from taxi_assets import settings
from taxi_assets.disk import space_left
from taxi_assets.resources.errors import CannotWrite

PREFIX = "taxi-assets-"
MARKER = ".taxi-assets-work"
PROC = Path("/proc")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_ticks(pid: int) -> int:
    """When process `pid` started, in clock ticks after boot (Linux); 0 where /proc has no such
    file (no /proc at all). Raises FileNotFoundError when /proc exists and the process does not."""
    if not PROC.is_dir():
        return 0
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])


def host_name() -> str:
    """This host's name as a folder name may hold it ("@" and "/" replaced)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def owner() -> str:
    """This process, as work folder names record it: `{host}.{pid}.{start}`."""
    pid = os.getpid()
    return f"{host_name()}.{pid}.{_start_ticks(pid)}"


def _running(pid: int, start: int) -> bool:
    """Whether process `pid` of this host is still the one that started at `start`."""
    if not PROC.is_dir() or start == 0:
        return _alive(pid)  # no start time to compare: the process id alone
    try:
        return _start_ticks(pid) == start
    except (FileNotFoundError, ProcessLookupError):
        return False
    except (OSError, ValueError, IndexError):  # unreadable: count it as running, keep its folder
        return True


@contextlib.contextmanager
def _usable(root: Path) -> Iterator[None]:
    """An OSError on the work root (missing rights, read-only, a file in the way) becomes a setup
    error naming the folder and the setting: retrying cannot fix it."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = (
            f"{space_left(root)}: free some space there, or set TAXI_WORK_DIR to a folder with room"
            if full
            else ("set TAXI_WORK_DIR to a folder this user can write")
        )
        raise CannotWrite(f"cannot use the work folder {root} (TAXI_WORK_DIR): {reason}; {fix}") from None


def _mark(folder: Path, owned_by: str) -> Path:
    """Mark `folder` as this project's, for the sweep; returns it."""
    (folder / MARKER).write_text(f"{owned_by}\n")
    return folder


def owned_folder(root: Path, name: str) -> Path:
    """Create `{root}/taxi-assets-{name}@{host}.{pid}.{start}` (0700, marked), or return it when it
    exists."""
    owned_by = owner()
    with _usable(root):
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = root / f"{PREFIX}{name}@{owned_by}"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder if (folder / MARKER).is_file() else _mark(folder, owned_by)


def owned_temp_folder(root: Path, name: str) -> Path:
    """A new folder of a unique name, `{root}/taxi-assets-{name}-…@{host}.{pid}.{start}` (0700,
    marked), that the sweep removes if this process dies before it does."""
    owned_by = owner()
    with _usable(root):
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = tempfile.mkdtemp(prefix=f"{PREFIX}{name}-", suffix=f"@{owned_by}", dir=root)
        return _mark(Path(made), owned_by)


def _ours_and_dead(folder: Path, host: str) -> bool:
    """Whether `folder` is a marked folder of this project, of a process of this host that is gone.
    Folders named before hosts were (`taxi-assets-{name}.{pid}`) have no "@": never swept."""
    if not folder.name.startswith(PREFIX):
        return False
    _, at, owned_by = folder.name.rpartition("@")
    parts = owned_by.rsplit(".", 2)
    if not at or len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return False
    folder_host, pid, start = parts[0], int(parts[1]), int(parts[2])
    if folder_host != host or _running(pid, start):
        return False
    try:
        return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()
    except OSError:  # another user's private folder
        return False


def sweep(root: Path) -> list[Path]:
    """Remove the folders of this host's processes of this project that are gone (killed mid-step);
    returns what it removed. Only marked `taxi-assets-*@{this host}.{pid}.{start}` folders are
    candidates."""
    removed = []
    host = host_name()
    with _usable(root):
        if not root.is_dir():
            return removed
        entries = list(root.iterdir())
    for folder in entries:
        if _ours_and_dead(folder, host):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class WorkDir(dg.ConfigurableResource):
    """Local disk for files in the making: one private folder per run and process, removed when it ends."""

    root: str | None = Field(
        default=None, description="Folder for files in the making; default TAXI_WORK_DIR, read at launch"
    )
    _folder: Path | None = PrivateAttr(default=None)
    _name: str = PrivateAttr(default="no-run")

    @property
    def root_path(self) -> Path:
        """The folder the runs' folders go in: `root`, else TAXI_WORK_DIR or its default (read now)."""
        return Path(self.root).resolve() if self.root else settings.work_dir()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At run start: sweep dead processes' folders, and fail now, naming it, if the folder is unusable."""
        self._name = context.run.run_id if context.run is not None else "no-run"
        self.sweep()
        # Fail now, naming the folder, rather than in the middle of a download.
        with _usable(self.root_path):
            self.root_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(self.root_path, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """At run end: remove this process's folder."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def sweep(self) -> list[Path]:
        """Remove the folders of this host's processes of this project that are gone; returns what it
        removed."""
        return sweep(self.root_path)

    def path(self, name: str) -> Path:
        """A path for a new file in this process's folder (created on first use)."""
        if self._folder is None or not self._folder.is_dir():
            self._folder = owned_folder(self.root_path, self._name)
        return self._folder / name
