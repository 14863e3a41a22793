"""The warehouse's interface: the table `rides`, one month x color slice at a time, and SQL.

Two implementations, one per target: DuckDB (`resources/local/warehouse.py`) and BigQuery
(`resources/gcp/warehouse.py`). Replacing a slice is atomic and idempotent: in one transaction the
old slice goes and the new one comes in, read by the warehouse itself from the published lake file.
The analytics assets bring their own SQL, one text per dialect (`assets/analytics_sql.py`), and run
it through `query` and `replace_rows`: the warehouse hands out the connection and the table names, not the domain.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import dagster as dg
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@dataclass(frozen=True)
class SliceLoad:
    """What a slice load left: the table, the slice's rows and the whole table's."""

    table: str
    rows: int  # in the slice after the replace
    table_rows: int  # in the whole table


class Warehouse(dg.ConfigurableResource):
    """Interface of both warehouses."""

    # Which SQL text an asset picks ("duckdb" or "bigquery"); query parameters are written $name in
    # DuckDB and @name in BigQuery.
    dialect: ClassVar[str]

    @abc.abstractmethod
    def replace_slice(
        self, *, source_uri: str, color: str, month: dt.date, file_schema: pa.Schema, fill_passenger_count: bool
    ) -> SliceLoad:
        """Replace the (color, month) slice of `rides` with the published file's rows. `file_schema`
        is the file's pinned schema (its source's), for a warehouse that must declare it."""
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
    def replace_table(self, name: str, table: pa.Table) -> int:
        """Replace a whole small table (the zone lookup) in one step, so a reader sees the old rows or
        the new ones, never none; returns the rows stored."""
        raise NotImplementedError

    @abc.abstractmethod
    def replace_rows(
        self, name: str, *, columns: str, delete_where: str, select: str, params: Mapping[str, object]
    ) -> None:
        """In one transaction, delete the rows of table `name` that `delete_where` matches and insert
        the rows of `select` (both in this dialect, with `params` by name); the table is created
        first, with `columns` (a column list in this dialect), if it does not exist. A concurrent
        writer of the same table never leaves the rows half replaced or doubled."""
        raise NotImplementedError

    @abc.abstractmethod
    def table_name(self, name: str) -> str:
        """A table's name as this dialect's SQL writes it: quoted, and qualified where it must be."""
        raise NotImplementedError

    @abc.abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether the warehouse holds the table `name` (a read: it creates nothing)."""
        raise NotImplementedError

    @abc.abstractmethod
    def query(self, sql: str, params: Mapping[str, object] | None = None) -> pd.DataFrame:
        """Run one statement in the warehouse and return its (small) result; `params` by name
        (str, int, float, date, datetime)."""
        raise NotImplementedError
