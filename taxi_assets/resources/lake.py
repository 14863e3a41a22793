"""The lake: where raw files, staged Parquet and published Parquet live. A folder here; a GCS
bucket in resources/gcp.py.

Every write is a publish: the object appears whole under its key or not at all. Keys are
slash-separated paths relative to the lake's root ("data/yellow/yellow_tripdata_2021-01.parquet").
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq


@dataclass(frozen=True)
class LakeObject:
    """What the lake knows of a stored object; storage-specific fields are None where absent."""

    key: str
    uri: str
    size: int
    generation: int | None = None
    md5: str | None = None
    crc32c: str | None = None

    def metadata(self) -> dict[str, dg.MetadataValue]:
        entries: dict[str, dg.MetadataValue] = {
            "uri": dg.MetadataValue.text(self.uri),
            "size_bytes": dg.MetadataValue.int(self.size),
        }
        if self.uri.startswith("/"):
            entries["path"] = dg.MetadataValue.path(self.uri)
        if self.generation is not None:
            entries["generation"] = dg.MetadataValue.text(str(self.generation))
        if self.md5:
            entries["md5"] = dg.MetadataValue.text(self.md5)
        if self.crc32c:
            entries["crc32c"] = dg.MetadataValue.text(self.crc32c)
        return entries


class Lake(dg.ConfigurableResource):
    """Interface of both lakes. Asset code talks to this; targets pick the implementation."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    @abc.abstractmethod
    def scratch_dir(self) -> Iterator[Path]:
        """A private local folder for building a file before `publish_file`; removed afterwards."""
        raise NotImplementedError

    @abc.abstractmethod
    def publish_file(self, local_path: Path, key: str) -> LakeObject:
        """Move a finished local file into the lake under `key`, atomically replacing any old one."""
        raise NotImplementedError

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str) -> LakeObject:
        """Publish a copy of an object under another key, atomically."""
        raise NotImplementedError

    @abc.abstractmethod
    def stat(self, key: str) -> LakeObject | None:
        raise NotImplementedError

    @contextlib.contextmanager
    @abc.abstractmethod
    def local_file(self, key: str) -> Iterator[Path]:
        """A local path holding the object's bytes for the duration of the block."""
        raise NotImplementedError

    @abc.abstractmethod
    def parquet_metadata(self, key: str) -> pq.FileMetaData:
        """The footer of a Parquet object, read without fetching the whole object where possible."""
        raise NotImplementedError


class LocalLake(Lake):
    """A folder standing in for the bucket: `{root}/{key}`."""

    root: str

    def _path(self, key: str) -> Path:
        return Path(self.root).resolve() / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    @contextlib.contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        # Inside the root, so that publishing is a rename on the same filesystem.
        base = Path(self.root).resolve() / ".scratch"
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            yield Path(tmp)

    def _replace_into(self, key: str, fill) -> LakeObject:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            fill(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return self._describe(key, dest)

    def publish_file(self, local_path: Path, key: str) -> LakeObject:
        def fill(tmp: Path) -> None:
            try:
                os.replace(local_path, tmp)
            except OSError:  # another filesystem
                shutil.copyfile(local_path, tmp)

        return self._replace_into(key, fill)

    def copy(self, src_key: str, dst_key: str) -> LakeObject:
        src = self._path(src_key)

        def fill(tmp: Path) -> None:
            # Objects are never modified in place (every write is a replace), so a hard link is a
            # safe, free copy.
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)

        return self._replace_into(dst_key, fill)

    def _describe(self, key: str, path: Path) -> LakeObject:
        return LakeObject(key=key, uri=str(path), size=path.stat().st_size)

    def stat(self, key: str) -> LakeObject | None:
        path = self._path(key)
        return self._describe(key, path) if path.is_file() else None

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"not in the lake: {path}")
        yield path

    def parquet_metadata(self, key: str) -> pq.FileMetaData:
        return pq.read_metadata(self._path(key))
