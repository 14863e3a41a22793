"""`rides` in a DuckDB file, loaded by DuckDB reading the lake's Parquet file itself."""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field

from taxi_assets import settings
from taxi_assets.resources.errors import SetupError, writing
from taxi_assets.resources.warehouse import SliceLoad, Warehouse
from taxi_assets.retrying import retry
from taxi_assets.schema import (
    ALL_COLUMNS_VIEW,
    RIDES_SCHEMA,
    RIDES_TABLE,
    rides_select_list,
)

# Insertion order means nothing in `rides`; dropping it and capping DuckDB's buffers made loads
# faster and smaller (docs/performance.md#tuned-settings).
DUCKDB_SETTINGS = {"preserve_insertion_order": False, "memory_limit": "256MB"}

_DUCKDB_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.timestamp("us"): "TIMESTAMP",
    pa.date32(): "DATE",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """DuckDB's errors are not OSErrors: a full disk (an IOException, or a FatalException when a
    checkpoint fails) becomes one, so `writing` can name the file."""
    try:
        yield
    except duckdb.Error as exc:
        if "no space left" in str(exc).lower():
            raise OSError(errno.ENOSPC, f"No space left on device ({exc})") from exc
        raise


def _held_by(exc: BaseException) -> str:
    """Who holds the lock, as DuckDB's error says: "another process (PID 1234)"."""
    holder = re.search(r"\(PID \d+\)", str(exc))
    return f"another process {holder.group(0)}" if holder else "another process"


class WarehouseLocked(SetupError):
    """Another process held the DuckDB file for longer than the bound: the step waited its retries
    already, so it fails at once."""


class DuckDBWarehouse(Warehouse):
    """One DuckDB file. DuckDB lets one process write it at a time: another run's load, or any other
    program with the file open, holds a lock, and this waits for it (bounded, and logged)."""

    dialect: ClassVar[str] = "duckdb"
    # Optional: run config that sets another field (lock_timeout_seconds) replaces the resource's
    # config at launch, and must not need the path; it is then the same settings.duckdb_path().
    database: str | None = Field(
        default=None,
        description="The DuckDB file; targets.py passes settings.duckdb_path() ($TAXI_DATA_DIR/warehouse.duckdb)",
    )
    lock_timeout_seconds: float = Field(
        default=600.0, description="How long to wait for another process's lock on the file before failing"
    )

    @property
    def path(self) -> str:
        """The DuckDB file: `database`, else `$TAXI_DATA_DIR/warehouse.duckdb` (read now)."""
        return self.database or str(settings.duckdb_path())

    @contextlib.contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        database = self.path
        # DuckDB creates the file, not its folder: on a fresh data folder the first run may be the
        # zones' (nothing has written the lake yet).
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        next_log = 0.0

        def waiting(attempt: int, exc: BaseException, pause: float, waited: float) -> None:
            nonlocal next_log
            if waited >= next_log:  # at the first wait, then every 30 s
                dg.get_dagster_logger().warning(
                    f"waiting for the warehouse lock on {database}, held by {_held_by(exc)} "
                    f"({waited:.0f} s so far, giving up after {self.lock_timeout_seconds:.0f} s)"
                )
                next_log = waited + 30

        conn = retry(
            lambda: duckdb.connect(database, config=DUCKDB_SETTINGS),
            retry_on=lambda exc: isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower(),
            give_up_after_seconds=self.lock_timeout_seconds,
            wait_whole_bound=True,  # the lock may go at any moment: keep looking until the bound
            first_pause=0.1,  # a short query's lock is gone within a few tenths of a second
            max_pause=2.0,  # a long load's lock is noticed within 2 s of its release
            jitter=0.5,  # two waiting runs do not try the file in step
            on_retry=waiting,
            on_give_up=lambda _, exc, __: WarehouseLocked(
                f"{database} is locked by {_held_by(exc)}: gave up after {self.lock_timeout_seconds:.0f} s "
                "(lock_timeout_seconds). Is a long load still running, or a program holding the file open?"
            ),
            chain=False,  # the message says all that DuckDB's error did
        )
        try:
            conn.execute("SET enable_progress_bar = false")  # it would be printed into the run's logs
            yield conn
        finally:
            conn.close()

    def _rides_columns(self) -> str:
        """`rides`' column list in DuckDB's types, from the pinned schema."""
        return ", ".join(
            f"{_quote(f.name)} {_DUCKDB_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}" for f in RIDES_SCHEMA
        )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for writes: a full disk or a failed write names the file (`writing`)."""
        with writing(self.path), _disk_errors(), self._connection() as conn:
            yield conn

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK on any error (a failed rollback does not hide the error)."""
        conn.execute("BEGIN TRANSACTION")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise

    def _replace(self, conn, name: str, *, columns: str, delete_where: str, select: str, params) -> None:
        """`replace_rows` on an open connection: create the table if missing, then one transaction."""

        def used(sql: str) -> dict[str, object]:  # DuckDB refuses parameters a statement does not name
            return {key: value for key, value in params.items() if re.search(rf"\${key}\b", sql)}

        table = _quote(name)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        with self._transaction(conn):
            conn.execute(f"DELETE FROM {table} WHERE {delete_where}", used(delete_where))
            conn.execute(f"INSERT INTO {table} {select}", used(select))

    def _has_table(self, conn: duckdb.DuckDBPyConnection, name: str) -> bool:
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = $name"
        return conn.execute(sql, {"name": name}).fetchone()[0] > 0

    def replace_slice(self, *, source_uri, color, month, file_schema, fill_passenger_count) -> SliceLoad:
        """Load the local Parquet file as the color x month slice of `rides`, swapped in one transaction."""
        if "://" in source_uri:
            raise ValueError(f"DuckDB warehouse loads local lake files only, got {source_uri}")
        del file_schema  # DuckDB reads the Parquet file's own schema
        select = ", ".join(
            ["$color AS color", "$month AS month"]
            + rides_select_list(
                color, quote=_quote, sql_type=lambda t: _DUCKDB_TYPES[t], fill_passenger_count=fill_passenger_count
            )
        )
        slice_params = {"color": color, "month": month}
        with self._writing() as conn:
            self._replace(
                conn,
                RIDES_TABLE,
                columns=self._rides_columns(),
                delete_where="color = $color AND month = $month",
                select=f"SELECT {select} FROM read_parquet($path)",
                params={**slice_params, "path": source_uri},
            )
            # Read after the commit, on the same connection: this load's rows (DuckDB takes one
            # writer at a time, so no other load changed the slice in between).
            loaded = conn.execute(
                f"SELECT count(*) FROM {RIDES_TABLE} WHERE color = $color AND month = $month", slice_params
            ).fetchone()[0]
            total = conn.execute(f"SELECT count(*) FROM {RIDES_TABLE}").fetchone()[0]
            if color in ALL_COLUMNS_VIEW:
                # The columns `rides` has no place for (fhvhv's request times, driver pay, flags...):
                # a view over every published file of the color, read where they lie in the lake.
                published = str(Path(source_uri).parent / "*.parquet").replace("'", "''")
                conn.execute(
                    f"CREATE OR REPLACE VIEW {ALL_COLUMNS_VIEW[color]} AS SELECT * FROM read_parquet('{published}')"
                )
        return SliceLoad(table=RIDES_TABLE, rows=loaded, table_rows=total)

    def slice_rows(self, color, month) -> int:
        """Rows of the color x month slice of `rides` (0 when the table is not there)."""
        with self._connection() as conn:
            if not self._has_table(conn, RIDES_TABLE):  # a read never creates the table
                return 0
            return conn.execute(
                f"SELECT count(*) FROM {RIDES_TABLE} WHERE color = $color AND month = $month",
                {"color": color, "month": month},
            ).fetchone()[0]

    def replace_table(self, name: str, table: pa.Table) -> int:
        """Replace the table with `table` in one transaction."""
        with self._writing() as conn:
            conn.register("incoming", table)
            with self._transaction(conn):
                conn.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * FROM incoming")
                rows = conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
        return rows

    def replace_rows(self, name, *, columns, delete_where, select, params) -> None:
        """Create the table if missing, then delete `delete_where` and insert `select` in one transaction."""
        with self._writing() as conn:
            self._replace(conn, name, columns=columns, delete_where=delete_where, select=select, params=params)

    def table_name(self, name: str) -> str:
        """The table's quoted name, for SQL."""
        return _quote(name)

    def has_table(self, name: str) -> bool:
        """Whether the database holds the table."""
        with self._connection() as conn:
            return self._has_table(conn, name)

    def query(self, sql, params=None):
        """Run one statement with named parameters; its result as a DataFrame."""
        with self._connection() as conn:
            return conn.execute(sql, dict(params or {})).fetch_df()

    def slice_row_counts(self):
        """Rows of each color x month slice of `rides` (empty when the table is not there)."""
        with self._connection() as conn:
            if not self._has_table(conn, RIDES_TABLE):  # a read never creates the table
                return {}
            rows = conn.execute(
                f"SELECT color, month, count(*) FROM {RIDES_TABLE} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        return {(color, month): n for color, month, n in rows}
