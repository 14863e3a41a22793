"""The lake in a folder: `{root}/{key}`, standing in for the bucket."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets import settings
from taxi_assets.resources.lake import Lake, LakeObject, SourceReplaced


class LocalLake(Lake):
    """A folder; a replace is a rename, so readers see the old file or the new one, never a part."""

    root: str | None = Field(default=None, description="Lake folder; default $TAXI_DATA_DIR/lake, read at launch")

    @property
    def root_path(self) -> Path:
        """The lake's folder: `root`, else `$TAXI_DATA_DIR/lake` (read now)."""
        return Path(self.root).resolve() if self.root else settings.lake_root()

    def _path(self, key: str) -> Path:
        root = self.root_path
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(f"lake key {key!r} is outside the lake root {root}")
        return path

    def uri(self, key: str) -> str:
        """The object's absolute path."""
        return str(self._path(key))

    def _replace(self, key: str, fill: Callable[[Path], None]) -> LakeObject:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            fill(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return self._describe(key, dest)

    def store(self, local_path: Path, key: str) -> LakeObject:
        """Move (or copy, across filesystems) the file into the lake and rename it over any old one."""

        def fill(tmp: Path) -> None:
            try:
                os.replace(local_path, tmp)  # the work folder is on the lake's filesystem by default
            except OSError:  # another filesystem (TAXI_WORK_DIR elsewhere): copy
                shutil.copyfile(local_path, tmp)

        return self._replace(key, fill)

    def copy(self, src_key: str, dst_key: str, src_generation: int | None = None) -> LakeObject:
        """A hard link (else a copy) of `src_key` under `dst_key`, if it is still `src_generation`."""
        src = self._path(src_key)
        # The link below takes whatever file is there when it runs; checked just before it.
        if src_generation is not None and (self.stat(src_key) or LakeObject("", "", 0)).generation != src_generation:
            raise SourceReplaced(
                f"{src} was replaced since this run checked it (version {src_generation}): nothing was "
                "published; rerun the partition"
            )

        def fill(tmp: Path) -> None:
            # Objects are never modified in place (every write is a replace), so a hard link is a
            # safe copy that costs no space.
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)

        return self._replace(dst_key, fill)

    def _describe(self, key: str, path: Path) -> LakeObject:
        # The modification time in ns stands for GCS's generation: every write is a new file.
        stat = path.stat()
        return LakeObject(key=key, uri=str(path), size=stat.st_size, generation=stat.st_mtime_ns)

    def stat(self, key: str) -> LakeObject | None:
        """The file's size and generation (its modification time in ns), or None if there is none."""
        path = self._path(key)
        return self._describe(key, path) if path.is_file() else None

    def delete(self, key: str) -> bool:
        """Remove the file if there is one; whether there was."""
        path = self._path(key)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed

    def local_path(self, key: str) -> Path | None:
        """The file itself, to read in place (None if there is none)."""
        path = self._path(key)
        return path if path.is_file() else None

    def download(self, key: str, dest: Path) -> Path:
        """Copy the file to `dest`."""
        shutil.copyfile(self._path(key), dest)
        return dest

    def parquet_footer(self, key: str) -> pq.FileMetaData:
        """The Parquet footer, read from the file."""
        return pq.read_metadata(self._path(key))
