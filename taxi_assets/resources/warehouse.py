"""The warehouse table `rides`, one month x color slice at a time. DuckDB here; BigQuery in
resources/gcp.py.

Replacing a slice is atomic and idempotent: in one transaction the old slice goes and the new one
comes in, read by the warehouse itself straight from the published lake file.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from taxi_assets.schema import RIDES_SCHEMA, RIDES_TABLE, rides_select_list


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


_DUCKDB_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.timestamp("us"): "TIMESTAMP",
    pa.date32(): "DATE",
}


def _duck_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBWarehouse(Warehouse):
    """`rides` in a DuckDB file, loaded by DuckDB reading the lake's Parquet file itself."""

    duckdb: DuckDBResource

    def _create_table_sql(self) -> str:
        columns = ", ".join(
            f"{_duck_quote(f.name)} {_DUCKDB_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}" for f in RIDES_SCHEMA
        )
        return f"CREATE TABLE IF NOT EXISTS {RIDES_TABLE} ({columns})"

    def replace_slice(self, *, source_uri, color, month, fill_passenger_count) -> SliceLoad:
        if "://" in source_uri:
            raise ValueError(f"DuckDB warehouse loads local lake files only, got {source_uri}")
        select = ", ".join(
            ["$color AS color", "$month AS month"]
            + rides_select_list(
                color, quote=_duck_quote, sql_type=lambda t: _DUCKDB_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        params = {"color": color, "month": month, "path": source_uri}
        with self.duckdb.get_connection() as conn:
            conn.execute(self._create_table_sql())
            conn.execute("BEGIN TRANSACTION")
            try:
                conn.execute(
                    f"DELETE FROM {RIDES_TABLE} WHERE color = $color AND month = $month",
                    {"color": color, "month": month},
                )
                conn.execute(f"INSERT INTO {RIDES_TABLE} SELECT {select} FROM read_parquet($path)", params)
                loaded = conn.execute(
                    f"SELECT count(*) FROM {RIDES_TABLE} WHERE color = $color AND month = $month",
                    {"color": color, "month": month},
                ).fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            total = conn.execute(f"SELECT count(*) FROM {RIDES_TABLE}").fetchone()[0]
        return SliceLoad(table=RIDES_TABLE, rows=loaded, table_rows=total)

    def slice_row_counts(self):
        with self.duckdb.get_connection() as conn:
            conn.execute(self._create_table_sql())
            rows = conn.execute(
                f"SELECT color, month, count(*) FROM {RIDES_TABLE} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        return {(color, month): n for color, month, n in rows}
