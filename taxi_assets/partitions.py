"""The month x color partition grid every asset shares, and how to read one key of it.

The grid is a month x color `MultiPartitionsDefinition` for either source, built by
`trip_partitions(source)` when the code location loads (`build_defs`); keys read
"yellow|2021-01-01" (dimensions sort by name: color first).
- releases: 2019-01 .. 2021-07 for each color (93 keys); `TAXI_LAST_MONTH` moves the end for a
  mirror that holds more.
- tlc: a month dimension from 2011-01 with no end, which grows by itself with the calendar (no
  reload), and ends before the month that just ended: the TLC publishes a month about eight weeks
  after it ends, so neither the current month nor the one before is offered. The colors start
  years apart (green 2014, fhv 2015, fhvhv 2019-02), so the rectangle holds cells before a color's
  first file: the assets succeed at once on them, holding nothing (`Source.no_file_reason`), and
  the sensor never asks for them (`upstream_keys`). Why a rectangle: docs/decisions.md#the-tlc-source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import dagster as dg

from taxi_assets import settings
from taxi_assets.sources import Source, month_after

# The TLC publishes month M in month M+2 (about eight weeks after it ends). A monthly window is
# offered once it has ended (offset 0: on 2026-12-03 the last month is 2026-11); -1 keeps out the
# month that just ended too, so the last month offered is the newest one that can be out.
TLC_END_OFFSET = -1


def trip_partitions(source: Source) -> dg.MultiPartitionsDefinition:
    """The month x color grid of `source`, shared by every partitioned asset built for it."""
    first = min(source.first_month.values()).isoformat()
    if source.name == "tlc":
        months = dg.MonthlyPartitionsDefinition(start_date=first, end_offset=TLC_END_OFFSET)
    else:
        # end_date is exclusive: the first month after the last published one.
        months = dg.MonthlyPartitionsDefinition(
            start_date=first, end_date=month_after(settings.last_month()).isoformat()
        )
    # Dimensions sort by name, so keys read "yellow|2021-01-01" (color first).
    return dg.MultiPartitionsDefinition({"month": months, "color": dg.StaticPartitionsDefinition(list(source.colors))})


def upstream_keys(source: Source, now: dt.datetime | None = None) -> list[str]:
    """The grid's keys at `now` (default: the clock) whose cell can hold an upstream file: what the
    sensor checks. The same definition the assets have, evaluated at the same moment."""
    keys = trip_partitions(source).get_partition_keys(current_time=now)
    return [key for key in keys if TripMonth.from_key(key, source.colors).no_file_reason(source) is None]


def colors_of(partitions_def: dg.MultiPartitionsDefinition) -> tuple[str, ...]:
    """The colors of a grid `trip_partitions` built: what its keys may name, for code that has the
    asset's partitions but not its source (the lake IO manager)."""
    return tuple(partitions_def.get_partitions_def_for_dimension("color").get_partition_keys())


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
        """The run's one partition; a run over a range fails at once (a dg.Failure, not retried)."""
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
        """The first day of the month after this one (the end of its pickup window)."""
        return month_after(self.month)

    @property
    def file_stem(self) -> str:
        """ "yellow_tripdata_2021-01", the name the releases and the lake use."""
        return f"{self.color}_tripdata_{self.ym}"

    def no_file_reason(self, source: Source) -> str | None:
        """Why this cell of `source`'s grid holds no file (before its color's first), or None."""
        return source.no_file_reason(self.color, self.month)

    def __str__(self) -> str:
        return self.key
