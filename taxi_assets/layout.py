"""Where an asset lives in the lake: declared by the asset itself, in its definition's metadata.

A lake asset (`io_manager_key="lake_io_manager"`) names its object's key, relative to the lake
root, as a template over its partition's fields, and may name side files that go with each version:

    @dg.asset(
        io_manager_key=LAKE_IO,
        metadata=layout.lake_metadata(
            layout.partition_path("staging/clean_trips", ".parquet"),
            rejected=layout.partition_path("rejected", ".csv.gz"),
        ),
    )

    "lake/path"           the object: "staging/clean_trips/{color}/{file_stem}.parquet", or a fixed
                          name for an asset that is not partitioned ("reports/trips_per_month.png")
    "lake/side/{name}"    a side file: "lake/side/rejected": "rejected/{color}/{file_stem}.csv.gz";
                          the asset hands it over as `NewFile(path, side_files={"rejected": path})`

The fields are {color}, {ym} ("2021-01") and {file_stem} ("yellow_tripdata_2021-01"), filled from a
validated `TripMonth` (a color of the source's grid and the first day of a month), so nothing a user types can
reach outside the asset's folder. A template is checked when it is declared with these helpers and
again when a key is made: relative, no empty, "." or ".." segment, no hidden name (the local lake's
files in the making start with "."), no other field. A new lake asset takes no edit here nor in
io_manager.py. The lake as the assets declare it (test_layout.py holds them to it, byte for byte):

    raw/{color}/{color}_tripdata_{YYYY-MM}.csv.gz                  raw_trips: the upstream file (.parquet from the TLC)
    staging/clean_trips/{color}/{color}_tripdata_{YYYY-MM}.parquet   clean_trips: typed Parquet, not yet checked
    data/{color}/{color}_tripdata_{YYYY-MM}.parquet                  gcs_parquet: the published file (the seed's layout)
    rejected/{color}/{color}_tripdata_{YYYY-MM}.csv.gz               clean_trips' side file "rejected", if any
    reports/trips_per_month.png                                      trips_per_month_chart (not partitioned)
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import dagster as dg

from taxi_assets.partitions import TripMonth

LAKE_PATH = "lake/path"
SIDE_PATH = "lake/side/"  # + the side file's name
LAKE_SOURCE = "lake/source"  # the upstream (releases, tlc) whose grid the asset is partitioned by
FIELDS = frozenset({"color", "ym", "file_stem"})


def partition_path(folder: str, suffix: str) -> str:
    """`{folder}/{color}/{file_stem}{suffix}`: a month x color file, in a folder per color."""
    return checked(f"{folder}/{{color}}/{{file_stem}}{suffix}")


def lake_metadata(path: str, *, source: str | None = None, **side_paths: str) -> dict[str, str]:
    """A lake asset's metadata: where its object lives and, by name, its side files' templates; for
    a partitioned asset, the source of its grid, whose cells before a color's first file hold no
    object (`Source.no_file_reason`)."""
    partitioned = is_partitioned(path)
    for name, side in side_paths.items():
        if is_partitioned(side) != partitioned:
            raise ValueError(f"side file {name!r} ({side!r}) and the object ({path!r}) must both be partitioned or not")
    own = {LAKE_SOURCE: source} if source is not None and partitioned else {}
    return {LAKE_PATH: path, **own, **{f"{SIDE_PATH}{name}": side for name, side in side_paths.items()}}


def checked(template: str) -> str:
    """The template if it can only name an object inside the lake root; else a ValueError."""
    if not isinstance(template, str):
        raise ValueError(f"a lake path is a template string, got {type(template).__name__}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"lake path {template!r}: {exc}") from None
    literal = []
    for text, field, spec, conversion in parts:
        literal.append(text)
        if "{" in text or "}" in text:  # "{{": a fixed name would keep it doubled, a template not
            raise ValueError(f"lake path {template!r}: a brace is not part of a name")
        if field is None:
            continue
        if field not in FIELDS or spec or conversion:
            written = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"lake path {template!r}: {{{written}}} is not a field; the fields are "
                + ", ".join(f"{{{name}}}" for name in sorted(FIELDS))
            )
        literal.append("x")  # a value: a field never makes a segment empty or hidden
    if "\\" in template or any(not s or s.startswith(".") for s in "".join(literal).split("/")):
        raise ValueError(
            f"lake path {template!r} must be relative to the lake root, with '/' between names that are "
            "neither empty nor start with '.'"
        )
    return template


def is_partitioned(template: str) -> bool:
    """Whether the template names one object per partition (it has fields) or one object."""
    checked(template)
    return any(field is not None for _, field, _, _ in string.Formatter().parse(template))


def key_for(template: str, month: TripMonth | None) -> str:
    """The key `template` gives `month` (None for an asset that is not partitioned)."""
    if is_partitioned(template) != (month is not None):
        raise ValueError(
            f"lake path {template!r} is for a partitioned asset, and needs a month x color partition"
            if month is None
            else f"lake path {template!r} has no field, so every partition (here {month}) would replace one object"
        )
    if month is None:
        return template
    return template.format(color=month.color, ym=month.ym, file_stem=month.file_stem)


def path_of(metadata: Mapping[str, object]) -> str:
    """The `lake/path` template of an asset's definition metadata; a ValueError saying how to
    declare it when there is none."""
    template = _text(metadata.get(LAKE_PATH))
    if template is None:
        raise ValueError(
            f"no {LAKE_PATH!r} metadata, so the lake does not know where it lives; declare it on the asset, "
            "e.g. @dg.asset(metadata=layout.lake_metadata(layout.partition_path('reports/extra', '.csv'))), "
            "or with a fixed name for an asset that is not partitioned"
        )
    return checked(template)


def source_of(metadata: Mapping[str, object]) -> str | None:
    """The source an asset's definition metadata names for its grid (None: not partitioned)."""
    value = _text(metadata.get(LAKE_SOURCE))
    return value if isinstance(value, str) else None


def side_paths_of(metadata: Mapping[str, object]) -> dict[str, str]:
    """The side files an asset's definition metadata declares: name -> template."""
    sides = {key.removeprefix(SIDE_PATH): _text(value) for key, value in metadata.items() if key.startswith(SIDE_PATH)}
    for name, template in sides.items():
        if not name.isidentifier():
            raise ValueError(f"side file {name!r}: a side file's name is a Python identifier, like 'rejected'")
        checked(template)
    return sides


def _text(value: object) -> object:
    """A metadata value as written (a string), also when given as `dg.MetadataValue.text(...)`."""
    return value.value if isinstance(value, dg.TextMetadataValue) else value
