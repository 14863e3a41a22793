"""The warehouse's interface: the table `rides`, one month x color slice at a time.

Two implementations, one per target: DuckDB (`resources/local/warehouse.py`) and BigQuery
(`resources/gcp/warehouse.py`). Replacing a slice is atomic and idempotent: in one transaction the
old slice goes and the new one comes in, read by the warehouse itself from the published lake file.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass

import dagster as dg


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
