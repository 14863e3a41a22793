"""Parquet persistence between assets: an asset hands over a finished local Parquet file, the IO
manager publishes it into the lake under a key derived from the asset and partition, and the
downstream asset receives a handle to it (not the rows: a month never has to fit in memory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from taxi_assets.partitions import TripMonth
from taxi_assets.resources.lake import Lake


@dataclass(frozen=True)
class ParquetFile:
    """An asset's output: a complete Parquet file on local disk, moved into the lake on output."""

    path: Path


@dataclass(frozen=True)
class LakeParquet:
    """An asset's input: where the upstream partition's Parquet object lives in the lake."""

    key: str
    uri: str
    num_rows: int


class LakeParquetIOManager(dg.ConfigurableIOManager):
    """Stores each partition of an asset at `{prefix}/{asset}/{color}/{color}_tripdata_{YYYY-MM}.parquet`.

    One partition per output: a run covering a range of partitions is refused with a clear error
    (launch a backfill with one run per partition instead).
    """

    lake: Lake
    prefix: str = "staging"

    def _key(self, asset_key: dg.AssetKey, partition_keys: list[str]) -> str:
        if len(partition_keys) != 1:
            raise dg.Failure(
                f"{asset_key.to_user_string()}: the lake IO manager stores one partition per run, "
                f"got {len(partition_keys)}; launch the backfill as one run per partition"
            )
        month = TripMonth.from_key(partition_keys[0])
        asset_path = "/".join(asset_key.path)
        return f"{self.prefix}/{asset_path}/{month.color}/{month.file_stem}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: ParquetFile) -> None:
        if not isinstance(obj, ParquetFile):
            raise TypeError(f"{context.asset_key.to_user_string()} must return a ParquetFile, got {type(obj).__name__}")
        key = self._key(context.asset_key, list(context.asset_partition_keys))
        stored = self.lake.publish_file(obj.path, key)
        context.add_output_metadata({f"staged_{name}": value for name, value in stored.metadata().items()})

    def load_input(self, context: dg.InputContext) -> LakeParquet:
        upstream = context.upstream_output
        key = self._key(upstream.asset_key, list(context.asset_partition_keys))
        if self.lake.stat(key) is None:
            raise dg.Failure(
                f"{upstream.asset_key.to_user_string()} has no stored partition at {self.lake.uri(key)}: "
                "materialize it first"
            )
        return LakeParquet(key=key, uri=self.lake.uri(key), num_rows=self.lake.parquet_metadata(key).num_rows)
