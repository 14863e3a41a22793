"""Local disk for files in the making: a download being written, Parquet being encoded.

Each process of a run gets its own folder, `{root}/taxi-assets-{run_id}.{pid}`, private to its
owner (0700) and marked as this project's by a file inside it (`.taxi-assets-work`). An asset writes
its output file there and returns it; the lake IO manager then moves it into the lake (or uploads
it, and may keep it for the next step of the same process). The folder goes when the run's
resources are torn down, and folders of processes that no longer run (a killed worker) go at the
next start: a crash never leaves files that grow the disk across retries.

The sweep removes only folders this project made: the name prefix, the marker file, and a process
id that is no longer running. `TAXI_WORK_DIR` may be a shared folder: anything else in it (a
`photos.12345/`, a `release.2024/`) is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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


def _mark(folder: Path) -> Path:
    """Mark `folder` as this project's, for the sweep; returns it."""
    (folder / MARKER).write_text(f"{os.getpid()}\n")
    return folder


def owned_folder(root: Path, name: str) -> Path:
    """Create `{root}/taxi-assets-{name}.{pid}` (0700, marked), or return it when it exists."""
    with _usable(root):
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = root / f"{PREFIX}{name}.{os.getpid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder if (folder / MARKER).is_file() else _mark(folder)


def owned_temp_folder(root: Path, name: str) -> Path:
    """A new folder of a unique name, `{root}/taxi-assets-{name}…{pid}` (0700, marked), that the
    sweep removes if this process dies before it does."""
    with _usable(root):
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _mark(Path(tempfile.mkdtemp(prefix=f"{PREFIX}{name}-", suffix=f".{os.getpid()}", dir=root)))


def _ours_and_dead(folder: Path) -> bool:
    if not folder.name.startswith(PREFIX):
        return False
    _, _, pid = folder.name.rpartition(".")
    if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
        return False
    try:
        return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()
    except OSError:  # another user's private folder
        return False


def sweep(root: Path) -> list[Path]:
    """Remove the folders of this project's processes that are gone (killed mid-step); returns what
    it removed. Only marked `taxi-assets-*.{pid}` folders are candidates."""
    removed = []
    with _usable(root):
        if not root.is_dir():
            return removed
        entries = list(root.iterdir())
    for folder in entries:
        if _ours_and_dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class WorkDir(dg.ConfigurableResource):
    root: str | None = Field(
        default=None, description="Folder for files in the making; default TAXI_WORK_DIR, read at launch"
    )
    _folder: Path | None = PrivateAttr(default=None)
    _name: str = PrivateAttr(default="no-run")

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve() if self.root else settings.work_dir()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._name = context.run.run_id if context.run is not None else "no-run"
        self.sweep()
        # Fail now, naming the folder, rather than in the middle of a download.
        with _usable(self.root_path):
            self.root_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not os.access(self.root_path, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def sweep(self) -> list[Path]:
        """Remove the folders of this project's processes that are gone; returns what it removed."""
        return sweep(self.root_path)

    def path(self, name: str) -> Path:
        """A path for a new file in this process's folder (created on first use)."""
        if self._folder is None or not self._folder.is_dir():
            self._folder = owned_folder(self.root_path, self._name)
        return self._folder / name
