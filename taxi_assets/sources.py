"""The two upstreams, and all that differs between them: the colors, the months each publishes,
where a month's file is, its format, and what "not published yet" looks like.

`TAXI_SOURCE` picks one when the code location loads (`releases`, the default, or `tlc`):
`definitions.py` hands it to `build_defs`, which builds the grid, the assets and the resources for it.
Nothing here reads it at import, so one process can build both (the tests do).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from taxi_assets import settings
from taxi_assets.schema import RELEASES_SCHEMAS, TLC_SCHEMAS


def month_after(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class Source:
    name: str
    colors: tuple[str, ...]
    first_month: Mapping[str, dt.date]
    suffix: str  # of the upstream file, and of the raw copy in the lake
    folder: str | None  # the path between the base URL and the file; None: the color's name
    not_published: frozenset[int]  # HTTP statuses that mean "no such month (yet)"
    schemas: Mapping[str, pa.Schema] = field(hash=False)  # each color's pinned schema

    def last_month(self) -> dt.date:
        if self.name == "releases":
            return settings.last_month()
        return dt.date.today().replace(day=1)  # the TLC publishes every month, ~8 weeks after it ends

    def months(self, color: str) -> list[dt.date]:
        months, month = [], self.first_month[color]
        while month <= self.last_month():
            months.append(month)
            month = month_after(month)
        return months

    def partition_keys(self) -> list[str]:
        """Every month x color that can exist, color first ("yellow|2021-01-01")."""
        return [f"{color}|{month.isoformat()}" for color in self.colors for month in self.months(color)]

    def file_name(self, color: str, ym: str) -> str:
        return f"{color}_tripdata_{ym}{self.suffix}"

    def url(self, base_url: str, color: str, ym: str) -> str:
        folder = self.folder if self.folder is not None else color
        return f"{base_url.rstrip('/')}/{folder}/{self.file_name(color, ym)}"

    def default_base_url(self) -> str:
        return settings.source_url() if self.name == "releases" else settings.tlc_url()


RELEASES = Source(
    name="releases",
    colors=("yellow", "green", "fhv"),
    first_month=dict.fromkeys(("yellow", "green", "fhv"), dt.date(2019, 1, 1)),
    suffix=".csv.gz",
    folder=None,
    not_published=frozenset({404}),
    schemas=RELEASES_SCHEMAS,
)
TLC = Source(
    name="tlc",
    colors=("yellow", "green", "fhv", "fhvhv"),
    # Yellow from 2011: 2009-2010 have other column names and coordinates instead of zone ids, so
    # they would be a different table, not another era of this one.
    first_month={
        "yellow": dt.date(2011, 1, 1),
        "green": dt.date(2014, 1, 1),
        "fhv": dt.date(2015, 1, 1),
        "fhvhv": dt.date(2019, 2, 1),
    },
    suffix=".parquet",
    folder="trip-data",
    not_published=frozenset({403, 404}),  # CloudFront answers 403 for a month not out yet
    schemas=TLC_SCHEMAS,
)
SOURCES = {"releases": RELEASES, "tlc": TLC}
# Every color either source has: all a slice of `rides` can be.
ALL_COLORS = tuple(dict.fromkeys(color for source in SOURCES.values() for color in source.colors))


def source_named(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"TAXI_SOURCE must be one of {tuple(SOURCES)}, got {name!r}")
    return SOURCES[name]
