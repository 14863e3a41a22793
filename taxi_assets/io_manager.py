"""The one way assets persist data in the lake.

Where: each lake asset declares its place in its own definition metadata (see `layout.py`):
`lake/path`, a template over the partition's fields (or a fixed name when it is not partitioned),
and `lake/side/{name}` for each side file that goes with a version. Like Dagster's own IO managers
(DbIOManager's `partition_expr`, UPathIOManager's paths from the asset key), this IO manager finds
the key from the context: `context.definition_metadata` when storing, the upstream asset's
`context.upstream_output.definition_metadata` when loading, and the run's partition. It names no
asset: a new lake asset needs no edit here. An asset that declares no `lake/path` fails at once,
saying how to declare one.

What: an asset returns what it made, and it is stored under the asset's key:
- `NewFile(path, side_files={name: path or None})`: a finished local file (the download, the typed
  Parquet), moved into the lake; each side file the asset declares is stored beside it under its
  own template, or removed when the output carries none, so no stale side file describes the new
  version (clean_trips' quarantined lines, `lake/side/rejected`). A side file the asset does not
  declare is refused before anything is written;
- `PublishCopy(handle)`: a copy of an upstream stored object under this asset's key, made by the
  storage itself (a hard link, a server-side GCS copy); declared side files are removed;
- a `LakeFile` handle of this very asset's stored object: keep it as it is, side files too
  (raw_trips, when the upstream file has not changed). The asset gets that handle from
  `stored_file(context, lake)`, which asks the `lake` resource for the key its own metadata names;
- `NoFile(reason)`: nothing, for a cell of the grid before its color's first file (the asset's
  `lake/source` metadata names the source that says so); the next asset receives the same
  `NoFile` instead of a handle, and nothing is ever stored for that cell.

Downstream assets receive a `LakeFile` handle: the object's URI, size and generation, the Parquet
footer's facts (read once), and its bytes on local disk on demand. When this process stored the
object a moment earlier (the gcp target, raw_trips then clean_trips), the handle points at the
local file it uploaded: nothing is downloaded again. A month never has to fit in memory.
"""

import contextlib
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from pydantic import PrivateAttr

from taxi_assets import layout, settings
from taxi_assets.partitions import TripMonth, colors_of
from taxi_assets.progress import Progress, megabytes
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.lake import Lake, LakeObject
from taxi_assets.resources.workdir import owned_temp_folder
from taxi_assets.sources import source_named


@dataclass(frozen=True)
class ParquetFacts:
    """What a Parquet footer says, without reading data."""

    num_rows: int
    null_counts: dict[str, int]

    @classmethod
    def from_footer(cls, footer: pq.FileMetaData) -> "ParquetFacts":
        """The row count and per-column null counts, summed over the footer's row groups."""
        names = footer.schema.names
        nulls = dict.fromkeys(names, 0)
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for index, name in enumerate(names):
                statistics = row_group.column(index).statistics
                nulls[name] += statistics.null_count if statistics is not None and statistics.has_null_count else 0
        return cls(num_rows=footer.num_rows, null_counts=nulls)


class LakeInput:
    """What the lake IO manager hands the next asset: a `LakeFile`, or `NoFile` for a cell of the
    grid that holds none (an input's annotation: Dagster checks inputs against it, and takes no union)."""


@dataclass(frozen=True)
class NewFile:
    """An asset's output: a finished local file, to be stored under the asset's lake key, with its
    side files by the names the asset declares (`lake/side/{name}` metadata); a declared side file
    that is absent or None is removed from the lake."""

    path: Path
    side_files: Mapping[str, Path | None] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeFile(LakeInput):
    """A stored object, as the IO manager hands it to the next asset (and `stored_file` to the asset
    that stored it)."""

    key: str
    uri: str
    size: int
    generation: int | None
    parquet: ParquetFacts | None = None
    # Where the bytes already are on this machine (a folder lake, or the file this process just
    # uploaded), and how to fetch them otherwise.
    local: Path | None = field(default=None, repr=False, compare=False)
    fetch: Callable[[Path], Path] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, lake: Lake, stored: LakeObject, parquet: ParquetFacts | None, local: Path | None = None) -> "LakeFile":
        """A handle on `stored`: its bytes where they already are on this machine (the lake's own
        folder, or `local`), fetched from `lake` otherwise."""
        return cls(
            key=stored.key,
            uri=stored.uri,
            size=stored.size,
            generation=stored.generation,
            parquet=parquet,
            local=lake.local_path(stored.key) or local,
            fetch=lambda dest, key=stored.key: lake.download(key, dest),
        )

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[Path]:
        """The object's bytes in a local file for the duration of the block (downloaded if needed)."""
        if self.local is not None and self.local.is_file():
            yield self.local
            return
        if self.fetch is None:
            raise FileNotFoundError(f"{self.uri} has no local copy and no way to fetch one")
        # Marked and named like the work folder's process folders, so a killed process's download is swept.
        folder = owned_temp_folder(settings.work_dir(), "input")
        try:
            yield self.fetch(folder / Path(self.key).name)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def downloads(self) -> bool:
        """Whether `local_copy` would download the bytes."""
        return self.local is None or not self.local.is_file()


@dataclass(frozen=True)
class NoFile(LakeInput):
    """An asset's output, and the input the next asset receives, for a cell of the grid that holds
    no file (before its color's first month upstream): nothing is stored."""

    reason: str  # "no TLC file before 2014-01 for green"

    @property
    def metadata(self) -> dict[str, object]:
        """The materialization metadata of an empty cell: 0 rows, and why (`no_file`)."""
        return {"dagster/row_count": 0, "no_file": self.reason}


@dataclass(frozen=True)
class PublishCopy:
    """An asset's output: store a copy of an upstream stored object under this asset's key."""

    source: LakeFile


@contextlib.contextmanager
def _declared(asset: str) -> Iterator[None]:
    """A lake path an asset declares wrongly fails its step at once: a retry would repeat it."""
    try:
        yield
    except ValueError as exc:
        raise dg.Failure(description=f"{asset}: {exc}", allow_retries=False) from exc


_Context = dg.OutputContext | dg.InputContext | dg.AssetExecutionContext


def _partition_keys(context: _Context) -> Sequence[str]:
    """The partition keys of the asset being stored or loaded (of the upstream asset, for an input)."""
    if isinstance(context, dg.AssetExecutionContext):
        if context.has_partition_key:
            return [context.partition_key]
        return context.partition_keys if context.has_partition_key_range else []
    return list(context.asset_partition_keys) if context.has_asset_partitions else []


def _colors(context: _Context) -> Collection[str]:
    """What a key may name: the colors of that asset's own grid (none when it is not partitioned)."""
    if isinstance(context, dg.AssetExecutionContext):
        partitions_def = context.assets_def.partitions_def
    else:
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
    return colors_of(partitions_def) if partitions_def is not None else ()


def _place(asset: str, metadata: Mapping[str, object], context: _Context) -> tuple[TripMonth | None, str]:
    """The partition (None for an asset that is not partitioned) and the key where the asset's
    definition metadata puts it."""
    with _declared(asset):
        template = layout.path_of(metadata)
    keys = _partition_keys(context)
    # A partitioned asset stores one partition per run; a run over a range is refused here.
    month = TripMonth.only(keys, _colors(context)) if layout.is_partitioned(template) or keys else None
    with _declared(asset):
        return month, layout.key_for(template, month)


def _no_file_reason(metadata: Mapping[str, object], month: TripMonth | None) -> str | None:
    """Why the asset's cell holds no object (it is before its color's first file), or None."""
    source = layout.source_of(metadata)
    return month.no_file_reason(source_named(source)) if month is not None and source is not None else None


def _footer_facts(lake: Lake, key: str) -> ParquetFacts | None:
    return ParquetFacts.from_footer(lake.parquet_footer(key)) if key.endswith(".parquet") else None


def stored_file(context: dg.AssetExecutionContext, lake: Lake) -> LakeFile | None:
    """What `lake` holds now for the asset being materialized and its partition, or None. The key
    comes from the asset's own `lake/path` metadata, as the lake IO manager stores it; returning the
    handle keeps the stored object as it is."""
    asset = context.asset_key.to_user_string()
    month, key = _place(asset, context.assets_def.metadata_by_key[context.asset_key], context)
    with failing_fast(month or asset):
        stored = lake.stat(key)
        return LakeFile.of(lake, stored, _footer_facts(lake, key)) if stored else None


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores each lake asset where its definition metadata says, one partition per run."""

    # A real annotation, not a string: this module has no `from __future__ import annotations`, since
    # with one Dagster 1.13 refuses the lake configured at launch that targets.py passes here.
    lake: Lake
    # This process's stored objects whose bytes are still on local disk, and footers already read:
    # key -> (generation, value). Lives as long as the run's resources.
    _kept: dict = PrivateAttr(default_factory=dict)
    _facts: dict = PrivateAttr(default_factory=dict)

    def _handle(self, stored: LakeObject) -> LakeFile:
        kept_generation, kept_path = self._kept.get(stored.key, (None, None))
        facts = None
        if stored.key.endswith(".parquet"):
            facts_generation, facts = self._facts.get(stored.key, (None, None))
            if facts is None or facts_generation != stored.generation:
                facts = _footer_facts(self.lake, stored.key)
                self._facts[stored.key] = (stored.generation, facts)
        return LakeFile.of(self.lake, stored, facts, local=kept_path if kept_generation == stored.generation else None)

    def handle_output(self, context: dg.OutputContext, obj: NewFile | PublishCopy | LakeFile | NoFile) -> None:
        """Store what an asset returned under its lake key (a new file, a copy, or nothing for an empty cell)."""
        asset = context.asset_key.to_user_string()
        metadata = context.definition_metadata
        month, key = _place(asset, metadata, context)
        reason = _no_file_reason(metadata, month)
        if isinstance(obj, NoFile) or reason is not None:
            if not (isinstance(obj, NoFile) and reason is not None):
                raise dg.Failure(
                    description=f"partition {month}: {asset} returned {type(obj).__name__}, but the cell "
                    + (f"holds no file ({reason})" if reason else "holds a file"),
                    allow_retries=False,
                )
            return  # nothing is stored for a cell before its color's first file
        side_files = obj.side_files if isinstance(obj, NewFile) else {}
        with _declared(asset):
            side_keys = {name: layout.key_for(side, month) for name, side in layout.side_paths_of(metadata).items()}
            if set(side_files) - set(side_keys):
                raise ValueError(
                    f"returned side files {sorted(set(side_files) - set(side_keys))} it does not declare; "
                    f"declare each as {layout.SIDE_PATH}{{name}} metadata"
                )
        with failing_fast(month or asset), writing(self.lake.uri(key)):
            self._store(context, key, obj)
            if not isinstance(obj, LakeFile):  # a kept object keeps its side files too
                self._store_side_files(context, side_files, side_keys)

    def _store(self, context: dg.OutputContext, key: str, obj: NewFile | PublishCopy | LakeFile) -> None:
        if isinstance(obj, NewFile):
            facts = ParquetFacts.from_footer(pq.read_metadata(obj.path)) if key.endswith(".parquet") else None
            stored = self.lake.store(obj.path, key)
            if obj.path.is_file():  # uploaded, not moved: keep it for the next step of this process
                self._kept[key] = (stored.generation, obj.path)
        elif isinstance(obj, PublishCopy):
            facts = obj.source.parquet
            progress = Progress(context.log, "publish")
            stored = self.lake.copy(obj.source.key, key, src_generation=obj.source.generation)
            rows = f"{facts.num_rows:,} rows, " if facts is not None else ""
            progress.done(f"{rows}{megabytes(stored.size)} at {stored.uri}")
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

    def _store_side_files(
        self, context: dg.OutputContext, files: Mapping[str, Path | None], side_keys: Mapping[str, str]
    ) -> None:
        """Each declared side file beside the object; a stale one of an earlier version goes."""
        for name, key in side_keys.items():
            path = files.get(name)
            if path is None:
                self.lake.delete(key)
                continue
            with writing(self.lake.uri(key)):
                stored = self.lake.store(path, key)
            context.add_output_metadata({f"{name}_uri": dg.MetadataValue.text(stored.uri)})

    def load_input(self, context: dg.InputContext) -> LakeFile | NoFile:
        """The upstream asset's object for this partition, as a LakeFile handle (or NoFile for an empty cell)."""
        upstream = context.upstream_output.asset_key.to_user_string()
        metadata = context.upstream_output.definition_metadata
        month, key = _place(upstream, metadata, context)
        reason = _no_file_reason(metadata, month)
        if reason is not None:
            return NoFile(reason)
        with failing_fast(month or upstream):
            stored = self.lake.stat(key)
            if stored is None:
                raise dg.Failure(
                    description=f"{f'partition {month}: ' if month else ''}{upstream} is not in the lake at "
                    f"{self.lake.uri(key)}; "
                    f"materialize {upstream} first",
                    allow_retries=False,
                )
            return self._handle(stored)
