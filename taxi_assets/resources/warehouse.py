"""The warehouse's interface: the table `rides`, one month x color slice at a time.

Two implementations, one per target: DuckDB (`resources/local/warehouse.py`) and BigQuery
(`resources/gcp/warehouse.py`). Replacing a slice is atomic and idempotent: in one transaction the
old slice goes and the new one comes in, read by the warehouse itself from the published lake file.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ZoneCoverage:
    """Pickup and dropoff location ids against the zone lookup."""

    ids: int  # non-NULL location ids (pickup and dropoff)
    unknown: int  # of those, ids the lookup does not have
    missing: int  # NULL location ids (fhv often has none)

    @property
    def unknown_share(self) -> float:
        return self.unknown / self.ids if self.ids else 0.0


@dataclass(frozen=True)
class SliceLoad:
    table: str
    rows: int  # in the slice after the replace
    table_rows: int  # in the whole table


class Warehouse(dg.ConfigurableResource):
    """Interface of both warehouses."""

    @abc.abstractmethod
    def replace_slice(self, *, source_uri: str, color: str, month: dt.date, fill_passenger_count: bool) -> SliceLoad:
        raise NotImplementedError

    @abc.abstractmethod
    def slice_row_counts(self) -> dict[tuple[str, dt.date], int]:
        """Rows per (color, month) slice, for reports and tests."""
        raise NotImplementedError

    @abc.abstractmethod
    def slice_rows(self, color: str, month: dt.date) -> int:
        """Rows in one slice of `rides` (0 when there are none, or no table yet)."""
        raise NotImplementedError

    @abc.abstractmethod
    def monthly_stats(self, color: str, month: dt.date) -> pd.DataFrame:
        """The slice's statistics per pickup borough (computed in the warehouse: one row per
        borough comes back): month, color, pickup_borough, trips, passengers, total_fare,
        median_fare, mean_distance, card_tip_share, pickups_outside_month."""
        raise NotImplementedError

    @abc.abstractmethod
    def trips_per_month(self) -> pd.DataFrame:
        """Trips per month and color over every slice in `monthly_trip_stats`: month, color, trips."""
        raise NotImplementedError

    @abc.abstractmethod
    def zone_coverage(self, color: str, month: dt.date) -> ZoneCoverage:
        """The slice's pickup and dropoff location ids against the zone lookup."""
        raise NotImplementedError
