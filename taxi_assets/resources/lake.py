"""The lake's interface: where raw files, staged Parquet and published Parquet are stored.

Two implementations, one per target: a folder (`resources/local/lake.py`) and a GCS bucket
(`resources/gcp/lake.py`). The lake IO manager (`io_manager.py`) stores and loads through it; an
asset that must see what is stored before it decides (raw_trips) gets the same lake as the `lake`
resource and asks `io_manager.stored_file`. Keys come from each asset's own metadata (`layout.py`).
Every write is a replace: the object appears whole under its key or not at all.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from taxi_assets.resources.errors import SetupError


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
        """The object as materialization metadata: its URI, size, and the checksums the storage gives."""
        # One entry per fact: a local file's URI is its path.
        local = self.uri.startswith("/")
        entries: dict[str, dg.MetadataValue] = {
            "uri": dg.MetadataValue.path(self.uri) if local else dg.MetadataValue.text(self.uri),
            "size_bytes": dg.MetadataValue.int(self.size),
        }
        if self.generation is not None and not local:  # a folder's stand-in (an mtime) means nothing to a user
            # GCS's version of the object, written as gcloud takes it: gs://bucket/key#generation.
            entries["generation"] = dg.MetadataValue.text(f"{self.uri}#{self.generation}")
        if self.md5:
            entries["md5"] = dg.MetadataValue.text(self.md5)
        if self.crc32c:
            entries["crc32c"] = dg.MetadataValue.text(self.crc32c)
        return entries


class SourceReplaced(SetupError):
    """The version of an object a step was handed (and its checks passed on) is no longer the one
    stored: another run replaced it. Not retried: a retry would copy the other run's version."""


class Lake(dg.ConfigurableResource):
    """Interface of both lakes."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Where the object under `key` is, as a user can open it (a path, or a gs:// URI)."""
        raise NotImplementedError

    @abc.abstractmethod
    def store(self, local_path: Path, key: str) -> LakeObject:
        """Put a finished local file under `key`, atomically replacing any old object. The local
        file may be moved into the lake (a folder lake renames it); don't use it afterwards unless
        it still exists."""
        raise NotImplementedError

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str, src_generation: int | None = None) -> LakeObject:
        """Publish a copy of an object under another key, atomically, without passing its bytes
        through this process where the storage allows. With `src_generation`, exactly that version
        of the source is copied, or SourceReplaced is raised and nothing is published."""
        raise NotImplementedError

    @abc.abstractmethod
    def stat(self, key: str) -> LakeObject | None:
        """What the lake knows of the object under `key`, or None if there is none."""
        raise NotImplementedError

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object if it exists; whether it did."""
        raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """Where the object's bytes already are on this machine, if they are (a folder lake)."""
        return None

    @abc.abstractmethod
    def download(self, key: str, dest: Path) -> Path:
        """Copy the object's bytes to a local file."""
        raise NotImplementedError

    @abc.abstractmethod
    def parquet_footer(self, key: str) -> pq.FileMetaData:
        """The footer of a Parquet object, read without fetching the whole object where possible."""
        raise NotImplementedError
