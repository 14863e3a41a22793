"""Local disk for files in the making: a download being written, Parquet being encoded.

Each process of a run gets its own folder, `{root}/{run_id}.{pid}`. An asset writes its output file
there and returns it; the lake IO manager then moves it into the lake (or uploads it, and may keep
it for the next step of the same process). The folder goes when the run's resources are torn down,
and folders of processes that no longer run (a killed worker) go at the next start: a crash never
leaves files that grow the disk across retries.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from taxi_assets import settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkDir(dg.ConfigurableResource):
    root: str | None = Field(
        default=None, description="Folder for files in the making; default TAXI_WORK_DIR, read at launch"
    )
    _folder: Path | None = PrivateAttr(default=None)

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve() if self.root else settings.work_dir()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run_id = context.run.run_id if context.run is not None else "no-run"
        self._folder = self.root_path / f"{run_id}.{os.getpid()}"
        self.sweep()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def sweep(self) -> list[Path]:
        """Remove the folders of processes that are gone (killed mid-step); returns what it removed."""
        removed = []
        if not self.root_path.is_dir():
            return removed
        for folder in self.root_path.iterdir():
            _, _, pid = folder.name.rpartition(".")
            if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def path(self, name: str) -> Path:
        """A path for a new file in this process's folder (created on first use)."""
        if self._folder is None:  # used outside a run (direct invocation in tests, scripts)
            self._folder = self.root_path / f"no-run.{os.getpid()}"
        self._folder.mkdir(parents=True, exist_ok=True)
        return self._folder / name
