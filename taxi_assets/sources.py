"""The two sources, and all that differs between them: the colors, the months each publishes,
where a month's file is, its format, and what "not published yet" looks like.

A `Source` is what is known of an upstream in advance; the resource that fetches its files is
`resources/upstream_files.py`'s `UpstreamFiles`, built from the same `Source` as the assets.
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
    """The first day of the month after `month`'s."""
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class Source:
    """One upstream's trip files as known in advance: colors, first months, URL layout, format, schemas."""

    name: str
    colors: tuple[str, ...]
    first_month: Mapping[str, dt.date]
    suffix: str  # of the upstream file, and of the raw copy in the lake
    folder: str | None  # the path between the base URL and the file; None: the color's name
    not_published: frozenset[int]  # HTTP statuses that mean "no such month (yet)"
    publisher: str  # who publishes the files, as a reason for an empty cell names it
    schemas: Mapping[str, pa.Schema] = field(hash=False)  # each color's pinned schema

    def no_file_reason(self, color: str, month: dt.date) -> str | None:
        """Why the month x color cell holds no file (it is before the color's first one), or None.
        The TLC's grid is a rectangle of months x colors, and its colors start years apart."""
        first = self.first_month[color]
        if month >= first:
            return None
        return f"no {self.publisher} file before {first:%Y-%m} for {color}"

    def file_name(self, color: str, ym: str) -> str:
        """The upstream file's name for `color` and `ym` (YYYY-MM), e.g. `fhv_tripdata_2019-01.csv.gz`."""
        return f"{color}_tripdata_{ym}{self.suffix}"

    def url(self, base_url: str, color: str, ym: str) -> str:
        """Where that file is under `base_url` (the public one, or a mirror with the same layout)."""
        folder = self.folder if self.folder is not None else color
        return f"{base_url.rstrip('/')}/{folder}/{self.file_name(color, ym)}"

    def default_base_url(self) -> str:
        """The base URL when none is configured: TAXI_SOURCE_URL or TAXI_TLC_URL, read now (at run or tick start)."""
        return settings.source_url() if self.name == "releases" else settings.tlc_url()


RELEASES = Source(
    name="releases",
    colors=("yellow", "green", "fhv"),
    first_month=dict.fromkeys(("yellow", "green", "fhv"), dt.date(2019, 1, 1)),
    suffix=".csv.gz",
    folder=None,
    not_published=frozenset({404}),
    publisher="release",
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
    publisher="TLC",
    schemas=TLC_SCHEMAS,
)
SOURCES = {"releases": RELEASES, "tlc": TLC}
# Every color either source has: all a slice of `rides` can be.
ALL_COLORS = tuple(dict.fromkeys(color for source in SOURCES.values() for color in source.colors))


def source_named(name: str) -> Source:
    """The `Source` a TAXI_SOURCE value names; anything else is a ValueError listing the names."""
    if name not in SOURCES:
        raise ValueError(f"TAXI_SOURCE must be one of {tuple(SOURCES)}, got {name!r}")
    return SOURCES[name]
