"""The one way assets persist data in the lake.

An asset returns what it made, and this IO manager stores it under the asset's key from
`layout.py`:
- `NewFile(path)`: a finished local file (the download, the typed Parquet), moved into the lake;
- `PublishCopy(handle)`: a copy of an upstream stored object under this asset's key, made by the
  storage itself (a hard link, a server-side GCS copy);
- a `LakeFile` handle of this very asset's stored object: keep it as it is (raw_trips, when the
  upstream file has not changed).

Downstream assets receive a `LakeFile` handle: the object's URI, size and generation, the Parquet
footer's facts (read once), and its bytes on local disk on demand. When this process stored the
object a moment earlier (the gcp target, raw_trips then clean_trips), the handle points at the
local file it uploaded: nothing is downloaded again. A month never has to fit in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from pydantic import PrivateAttr

from taxi_assets import settings
from taxi_assets.layout import REPORT_KEYS, key_for, rejected_key
from taxi_assets.partitions import TripMonth
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.lake import Lake, LakeObject


@dataclass(frozen=True)
class ParquetFacts:
    """What a Parquet footer says, without reading data."""

    num_rows: int
    null_counts: dict[str, int]

    @classmethod
    def from_footer(cls, footer: pq.FileMetaData) -> ParquetFacts:
        names = footer.schema.names
        nulls = dict.fromkeys(names, 0)
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for index, name in enumerate(names):
                statistics = row_group.column(index).statistics
                nulls[name] += statistics.null_count if statistics is not None and statistics.has_null_count else 0
        return cls(num_rows=footer.num_rows, null_counts=nulls)


@dataclass(frozen=True)
class NewFile:
    """An asset's output: a finished local file, to be stored under the asset's lake key; for
    clean_trips, with the lines it set aside (or None: then no rejected file describes this version)."""

    path: Path
    rejected: Path | None = None


@dataclass(frozen=True)
class LakeFile:
    """A stored object, as the IO manager hands it to the next asset."""

    key: str
    uri: str
    size: int
    generation: int | None
    parquet: ParquetFacts | None = None
    # Where the bytes already are on this machine (a folder lake, or the file this process just
    # uploaded), and how to fetch them otherwise.
    local: Path | None = field(default=None, repr=False, compare=False)
    fetch: Callable[[Path], Path] | None = field(default=None, repr=False, compare=False)

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[Path]:
        """The object's bytes in a local file for the duration of the block (downloaded if needed)."""
        if self.local is not None and self.local.is_file():
            yield self.local
            return
        if self.fetch is None:
            raise FileNotFoundError(f"{self.uri} has no local copy and no way to fetch one")
        work = settings.work_dir()
        work.mkdir(parents=True, exist_ok=True)
        # Named like the work folder's process folders, so a killed process's download is swept.
        folder = Path(tempfile.mkdtemp(prefix="input-", suffix=f".{os.getpid()}", dir=work))
        try:
            yield self.fetch(folder / Path(self.key).name)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def downloads(self) -> bool:
        """Whether `local_copy` would download the bytes."""
        return self.local is None or not self.local.is_file()


@dataclass(frozen=True)
class PublishCopy:
    """An asset's output: store a copy of an upstream stored object under this asset's key."""

    source: LakeFile


def _month(context: dg.OutputContext | dg.InputContext, asset_name: str) -> TripMonth | None:
    """The partition being stored or loaded; None for the unpartitioned reports."""
    if asset_name in REPORT_KEYS and not context.has_asset_partitions:
        return None
    return TripMonth.only(list(context.asset_partition_keys) if context.has_asset_partitions else [])


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores `raw_trips`, `clean_trips` and `gcs_parquet`, one partition per run, in the lake."""

    lake: Lake
    # This process's stored objects whose bytes are still on local disk, and footers already read:
    # key -> (generation, value). Lives as long as the run's resources.
    _kept: dict = PrivateAttr(default_factory=dict)
    _facts: dict = PrivateAttr(default_factory=dict)

    def _handle(self, stored: LakeObject) -> LakeFile:
        kept_generation, kept_path = self._kept.get(stored.key, (None, None))
        local = self.lake.local_path(stored.key) or (kept_path if kept_generation == stored.generation else None)
        facts = None
        if stored.key.endswith(".parquet"):
            facts_generation, facts = self._facts.get(stored.key, (None, None))
            if facts is None or facts_generation != stored.generation:
                facts = ParquetFacts.from_footer(self.lake.parquet_footer(stored.key))
                self._facts[stored.key] = (stored.generation, facts)
        return LakeFile(
            key=stored.key,
            uri=stored.uri,
            size=stored.size,
            generation=stored.generation,
            parquet=facts,
            local=local,
            fetch=lambda dest, key=stored.key: self.lake.download(key, dest),
        )

    def stored(self, context: dg.AssetExecutionContext) -> LakeFile | None:
        """What the lake holds now for this asset and partition, or None."""
        key = key_for(context.asset_key.to_user_string(), TripMonth.from_context(context))
        stored = self.lake.stat(key)
        return self._handle(stored) if stored else None

    def handle_output(self, context: dg.OutputContext, obj: NewFile | PublishCopy | LakeFile) -> None:
        asset = context.asset_key.to_user_string()
        month = _month(context, asset)
        key = key_for(asset, month)
        with failing_fast(month or asset), writing(self.lake.uri(key)):
            self._store(context, key, obj, month)

    def _store(
        self, context: dg.OutputContext, key: str, obj: NewFile | PublishCopy | LakeFile, month: TripMonth | None
    ) -> None:
        if isinstance(obj, NewFile):
            facts = ParquetFacts.from_footer(pq.read_metadata(obj.path)) if key.endswith(".parquet") else None
            stored = self.lake.store(obj.path, key)
            if obj.path.is_file():  # uploaded, not moved: keep it for the next step of this process
                self._kept[key] = (stored.generation, obj.path)
            if context.asset_key.to_user_string() == "clean_trips":
                self._store_rejected(context, obj.rejected, rejected_key(month))
        elif isinstance(obj, PublishCopy):
            facts = obj.source.parquet
            stored = self.lake.copy(obj.source.key, key)
        elif isinstance(obj, LakeFile) and obj.key == key:
            facts = obj.parquet
            stored = self.lake.stat(key)
            if stored is None or (stored.generation, stored.size) != (obj.generation, obj.size):
                raise dg.Failure(f"{obj.uri} changed or vanished while being kept; rerun the partition")
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return NewFile, PublishCopy or its own LakeFile, "
                f"got {type(obj).__name__}"
            )
        if facts is not None:
            self._facts[key] = (stored.generation, facts)
        context.add_output_metadata(stored.metadata())

    def _store_rejected(self, context: dg.OutputContext, path: Path | None, key: str) -> None:
        """The quarantined lines beside the staged file; a stale file of an earlier version goes."""
        if path is None:
            self.lake.delete(key)
            return
        stored = self.lake.store(path, key)
        context.add_output_metadata({"rejected_uri": dg.MetadataValue.text(stored.uri)})

    def load_input(self, context: dg.InputContext) -> LakeFile:
        upstream = context.upstream_output.asset_key.to_user_string()
        month = _month(context, upstream)
        key = key_for(upstream, month)
        with failing_fast(month or upstream):
            stored = self.lake.stat(key)
            if stored is None:
                raise dg.Failure(
                    description=f"partition {month}: {upstream} is not in the lake at {self.lake.uri(key)}; "
                    f"materialize {upstream} first",
                    allow_retries=False,
                )
            return self._handle(stored)
