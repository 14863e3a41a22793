"""The month x color partition grid every asset shares, and how to read one key of it.

The grid is what the source publishes, built for it by `trip_partitions(source)` when the code
location loads (`build_defs`):
- releases: 2019-01 .. 2021-07 for each color (93 keys), a month x color grid;
  `TAXI_LAST_MONTH` moves the end for a mirror that holds more.
- tlc: each color from its first month to the current one; the colors start years apart (yellow
  2011, green 2014, fhv 2015, fhvhv 2019-02), so the grid is the list of months that can exist,
  not a rectangle: green 2012 is never offered. Keys read the same: "yellow|2021-01-01".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import dagster as dg

from taxi_assets.sources import Source, month_after


def trip_partitions(source: Source) -> dg.PartitionsDefinition:
    """The month x color grid of `source`, shared by every partitioned asset built for it."""
    if source.name == "tlc":
        return dg.StaticPartitionsDefinition(source.partition_keys())
    first = min(source.first_month.values()).isoformat()
    # end_date is exclusive: the first month after the last published one.
    months = dg.MonthlyPartitionsDefinition(start_date=first, end_date=month_after(source.last_month()).isoformat())
    # Dimensions sort by name, so keys read "yellow|2021-01-01" (color first).
    return dg.MultiPartitionsDefinition({"month": months, "color": dg.StaticPartitionsDefinition(list(source.colors))})


def colors_of(partitions_def: dg.PartitionsDefinition) -> tuple[str, ...]:
    """The colors of a grid `trip_partitions` built: what its keys may name, for code that has the
    asset's partitions but not its source (the lake IO manager)."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return tuple(partitions_def.get_partitions_def_for_dimension("color").get_partition_keys())
    return tuple(dict.fromkeys(key.partition("|")[0] for key in partitions_def.get_partition_keys()))


@dataclass(frozen=True)
class TripMonth:
    """One partition: a color's trip file for one calendar month."""

    color: str
    month: dt.date  # always the first day of the month

    @classmethod
    def from_key(cls, key: str | dg.MultiPartitionKey, colors: Collection[str]) -> TripMonth:
        """Read and validate a partition key ("yellow|2021-01-01") of a grid with these `colors` (the
        source's); anything else is a ValueError naming the key, before it can become a URL or a lake path."""
        if isinstance(key, dg.MultiPartitionKey):
            parts = key.keys_by_dimension
            color, month = parts.get("color"), parts.get("month")
        else:
            color, _, month = str(key).partition("|")
        try:
            day = dt.date.fromisoformat(month or "")
        except ValueError:
            day = None
        if color not in colors or day is None or day.day != 1 or len(month) != 10:
            raise ValueError(f"not a month x color partition key (like 'yellow|2021-01-01'): {str(key)!r}")
        return cls(color=color, month=day)

    @classmethod
    def only(cls, partition_keys: Sequence[str], colors: Collection[str]) -> TripMonth:
        """The one partition of a run; a run over a range of partitions is refused."""
        if len(partition_keys) != 1:
            raise dg.Failure(
                description=f"taxi assets materialize one month x color partition per run, got {len(partition_keys)}; "
                "launch a backfill with one run per partition instead of a single-run range",
                allow_retries=False,
            )
        return cls.from_key(partition_keys[0], colors)

    @classmethod
    def from_context(cls, context: dg.AssetExecutionContext, colors: Collection[str]) -> TripMonth:
        if context.has_partition_key:
            return cls.from_key(context.partition_key, colors)
        return cls.only(context.partition_keys if context.has_partition_key_range else [], colors)

    @property
    def ym(self) -> str:
        """ "2021-01", as in the upstream file names."""
        return self.month.strftime("%Y-%m")

    @property
    def key(self) -> str:
        """The Dagster partition key string, e.g. "yellow|2021-01-01"."""
        return f"{self.color}|{self.month.isoformat()}"

    @property
    def next_month(self) -> dt.date:
        return month_after(self.month)

    @property
    def file_stem(self) -> str:
        """ "yellow_tripdata_2021-01", the name the releases and the lake use."""
        return f"{self.color}_tripdata_{self.ym}"

    def __str__(self) -> str:
        return self.key
