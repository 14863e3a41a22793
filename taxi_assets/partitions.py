"""The month x color partition grid every asset shares, and how to read one key of it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg

COLORS = ("yellow", "green", "fhv")
FIRST_MONTH = "2019-01-01"

month_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH)
color_partitions = dg.StaticPartitionsDefinition(list(COLORS))

# Dimensions sort by name, so keys read "yellow|2021-01-01" (color first).
trip_partitions = dg.MultiPartitionsDefinition({"month": month_partitions, "color": color_partitions})


@dataclass(frozen=True)
class TripMonth:
    """One partition: a color's trip file for one calendar month."""

    color: str
    month: dt.date  # always the first day of the month

    @classmethod
    def from_key(cls, key: str | dg.MultiPartitionKey) -> TripMonth:
        if not isinstance(key, dg.MultiPartitionKey):
            key = trip_partitions.get_partition_key_from_str(key)
        parts = key.keys_by_dimension
        month = dt.date.fromisoformat(parts["month"])
        if parts["color"] not in COLORS or month.day != 1:
            raise ValueError(f"not a month x color partition key: {key!r}")
        return cls(color=parts["color"], month=month)

    @classmethod
    def from_context(cls, context: dg.AssetExecutionContext) -> TripMonth:
        if not context.has_partition_key:
            raise dg.Failure(
                "taxi assets materialize one month x color partition per run; "
                "launch a backfill (one run per partition) instead of a single-run range"
            )
        return cls.from_key(context.partition_key)

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
        return (self.month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)

    @property
    def file_stem(self) -> str:
        """ "yellow_tripdata_2021-01", the name the releases and the lake use."""
        return f"{self.color}_tripdata_{self.ym}"

    def as_multi_partition_key(self) -> dg.MultiPartitionKey:
        return dg.MultiPartitionKey({"color": self.color, "month": self.month.isoformat()})

    def __str__(self) -> str:
        return self.key
