"""The upstream release mirror: its base URL and how patiently to download from it."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import requests
from pydantic import Field

from taxi_assets.partitions import TripMonth
from taxi_assets.upstream import DEFAULT_SOURCE_URL, Downloaded, Fingerprint, download, probe, release_url


class TripSource(dg.ConfigurableResource):
    """NYC TLC trip files as published by the DataTalksClub `nyc-tlc-data` releases (or a mirror
    with the same layout)."""

    base_url: str = Field(default=DEFAULT_SOURCE_URL, description="Release base URL (TAXI_SOURCE_URL)")
    attempts: int = Field(default=4, description="Download attempts per run for transient failures")
    backoff_seconds: float = Field(default=2.0, description="First retry pause; doubles, with full jitter")
    timeout_seconds: float = Field(default=60.0, description="Connect and per-read timeout")

    def url_for(self, month: TripMonth) -> str:
        return release_url(self.base_url, month.color, month.ym)

    def fetch(self, month: TripMonth, dest: Path, log: logging.Logger | None = None) -> Downloaded:
        return download(
            self.url_for(month),
            dest,
            attempts=self.attempts,
            backoff_seconds=self.backoff_seconds,
            timeout_seconds=self.timeout_seconds,
            log=log,
        )

    def fingerprint(self, month: TripMonth, session: requests.Session | None = None) -> Fingerprint | None:
        """The upstream file's ETag / Last-Modified / size (one HEAD request), or None if not published."""
        return probe(self.url_for(month), session=session, timeout_seconds=min(self.timeout_seconds, 15.0))
