"""The trip files at the upstream a code location serves (the DataTalksClub releases' CSV.gz files,
or the TLC's own Parquet files), and how patiently to download them.

Vocabulary: a `Source` (sources.py) is what is known of an upstream in advance: its colors, grid,
file names and formats. `UpstreamFiles` is the resource that fetches its files over HTTP, built
from the `Source` the assets were built for (`UpstreamFiles.of`, called by `targets.resources_for`).

The source is part of the resource's class (`ReleaseFiles`, `TlcFiles`), not of its config: Dagster
rebuilds a resource from its config when a run starts, so a config field could be changed, or
reset to its default by run config that sets other fields, and then disagree with the assets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import dagster as dg
import requests
from pydantic import Field, field_validator, model_validator

from taxi_assets.partitions import TripMonth
from taxi_assets.sources import RELEASES, TLC, Source
from taxi_assets.upstream import (
    MAX_DOWNLOAD_BYTES,
    MAX_LOOKUP_BYTES,
    Downloaded,
    Fingerprint,
    checked_base_url,
    download,
    fetch_small,
    probe,
    redact,
    zone_lookup_url,
)


class UpstreamFiles(dg.ConfigurableResource):
    """The NYC TLC trip files of one source, fetched over HTTP: the DataTalksClub `nyc-tlc-data`
    releases (TAXI_SOURCE_URL) or the TLC's own Parquet files (TAXI_TLC_URL), or a mirror with the
    same layout. Built with `UpstreamFiles.of(source)` from the `Source` the assets were built for.

    A download is retried inside the run on transient failures (5xx, timeouts, cut transfers),
    with exponential backoff and full jitter, until `attempts` tries or `give_up_after_seconds`:
    that is the whole bound on how long a partition keeps trying a broken upstream file, a transfer
    still going when it passes included. A file over `max_download_bytes` (the zone lookup:
    `max_lookup_bytes`) fails at once, before it is read if its announced size says so.

    Values are checked when the resource is built (at load, and when a run starts with its config):
    a bad one fails naming the setting.
    """

    source: ClassVar[Source]  # whose files: set by each subclass (see the module's docstring)

    base_url: str | None = Field(
        default=None, description="Base URL; default TAXI_SOURCE_URL (releases) or TAXI_TLC_URL (tlc) at launch"
    )
    attempts: int = Field(default=6, description="Download attempts per run for transient failures")
    backoff_seconds: float = Field(default=2.0, description="First retry pause; doubles, with full jitter")
    timeout_seconds: float = Field(default=60.0, description="Connect and per-read timeout")
    give_up_after_seconds: float = Field(default=300.0, description="No new attempt after this long")
    # HEAD requests wait on the network, not the CPU, so this does not follow the core count: 8 at
    # once check the releases' 93 files well inside a tick (docs/performance.md#the-sensor) without
    # hammering GitHub.
    max_concurrent_requests: int = Field(default=8, description="Concurrent HEAD requests of a sensor tick")
    max_download_bytes: int = Field(
        default=MAX_DOWNLOAD_BYTES, description="Largest trip file accepted, in bytes (the biggest real month is ~1 GB)"
    )
    max_lookup_bytes: int = Field(default=MAX_LOOKUP_BYTES, description="Largest zone lookup accepted (~12 KB real)")

    @staticmethod
    def of(source: Source, **settings: object) -> UpstreamFiles:
        """The files of `source`, with download settings (`base_url`, `attempts`, ...) for a mirror or a test."""
        return FILES_OF[source.name](**settings)

    @model_validator(mode="before")
    @classmethod
    def _of_a_source(cls, data: object) -> object:
        if not hasattr(cls, "source"):
            raise ValueError("UpstreamFiles serves one source: build it with UpstreamFiles.of(source)")
        return data

    @field_validator("attempts", "max_concurrent_requests", "max_download_bytes", "max_lookup_bytes")
    @classmethod
    def _at_least_one(cls, value: int, info) -> int:
        if value < 1:
            raise ValueError(f"UpstreamFiles.{info.field_name} must be at least 1, got {value}")
        return value

    @field_validator("timeout_seconds", "give_up_after_seconds")
    @classmethod
    def _positive_seconds(cls, value: float, info) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"UpstreamFiles.{info.field_name} must be a number of seconds above 0, got {value}")
        return value

    @field_validator("backoff_seconds")
    @classmethod
    def _seconds(cls, value: float, info) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"UpstreamFiles.{info.field_name} must be a number of seconds, 0 or more, got {value}")
        return value

    @property
    def base(self) -> str:
        """The base URL downloads use: `base_url`, else the source's (TAXI_SOURCE_URL / TAXI_TLC_URL, read now)."""
        return checked_base_url(self.base_url or self.source.default_base_url())

    def url_for(self, month: TripMonth) -> str:
        """The URL of `month`'s file, with any credentials in it (show it through `upstream.redact`)."""
        return self.source.url(self.base, month.color, month.ym)

    def fetch(
        self,
        month: TripMonth,
        dest: Path,
        log: logging.Logger | None = None,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> Downloaded:
        """Download `month`'s file to `dest`, verified and retried within this resource's bounds."""
        return download(
            self.url_for(month),
            dest,
            **self._retries(),
            max_bytes=self.max_download_bytes,
            suffix=self.source.suffix,
            not_published=self.source.not_published,
            log=log,
            on_progress=on_progress,
        )

    def _retries(self) -> dict[str, float]:
        """The retry settings a download and the zone lookup both take."""
        return {
            "attempts": self.attempts,
            "backoff_seconds": self.backoff_seconds,
            "timeout_seconds": self.timeout_seconds,
            "give_up_after_seconds": self.give_up_after_seconds,
        }

    def zone_lookup(self) -> tuple[str, bytes]:
        """The zone lookup's URL (as shown) and its bytes."""
        url = zone_lookup_url(self.base)
        data = fetch_small(url, **self._retries(), max_bytes=self.max_lookup_bytes)
        return redact(url), data

    def fingerprint(self, month: TripMonth, session: requests.Session | None = None) -> Fingerprint | None:
        """The upstream file's ETag / Last-Modified / size (one HEAD request), or None if not published."""
        return probe(
            self.url_for(month),
            session=session,
            timeout_seconds=min(self.timeout_seconds, 15.0),
            not_published=self.source.not_published,
        )


class ReleaseFiles(UpstreamFiles):
    """The DataTalksClub `nyc-tlc-data` release files (TAXI_SOURCE=releases), downloaded from
    `base_url`, else TAXI_SOURCE_URL, retried and bounded as each setting says (`UpstreamFiles`)."""

    source: ClassVar[Source] = RELEASES


class TlcFiles(UpstreamFiles):
    """The TLC's own Parquet trip files (TAXI_SOURCE=tlc), downloaded from `base_url`, else
    TAXI_TLC_URL, retried and bounded as each setting says (`UpstreamFiles`)."""

    source: ClassVar[Source] = TLC


# Each source's resource class, by the source's name.
FILES_OF: dict[str, type[UpstreamFiles]] = {RELEASES.name: ReleaseFiles, TLC.name: TlcFiles}
