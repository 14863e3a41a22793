"""Reading one of the TLC's own Parquet files into the color's pinned schema, batch by batch.

The TLC's files change types across eras: ids as INT32, INT64 or DOUBLE; strings as string or
large_string; all-NULL columns written with the null type; `airport_fee` as `Airport_fee` from
2023-02; `cbd_congestion_fee` only from 2025-01; fhv's mixed casings. Each column is cast to its
pinned type in SQL by DuckDB, which also reads the file a vector at a time: a month written as one
huge row group (yellow 2023-01 is) still streams in bounded memory. A DOUBLE that must become an
integer is checked first: a fraction fails the month naming the column, the row and the value,
as the CSV path does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.schema import FLOAT, INT, OPTIONAL_COLUMNS, STRING, TIMESTAMP, TRIP_SCHEMAS, canonical_column

BATCH_ROWS = 64 * 1024
# DuckDB's buffers while it reads (the Parquet writer and its row groups come on top): a 20M-row
# single-row-group fhvhv month peaked at PARQUET_PEAK with this cap.
MEMORY_LIMIT = "256MB"
# Decoding is CPU work: one thread per core, but at most 4 so the memory cap holds on big machines.
THREADS = max(1, min(4, os.cpu_count() or 1))

_SQL_TYPE = {INT: "BIGINT", FLOAT: "DOUBLE", STRING: "VARCHAR", TIMESTAMP: "TIMESTAMP"}
_NUMBERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_FRACTIONAL = ("DOUBLE", "FLOAT", "REAL") + tuple("DECIMAL" for _ in range(1))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _whole(column: str, name: str, target_sql: str) -> str:
    """A DOUBLE column as an integer type, or an error naming the row and the value."""
    where = _literal(f"column {name!r}, row ")
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} = trunc({column}) THEN CAST({column} AS {target_sql}) "
        f"ELSE error({where} || (file_row_number + 1) || ': value ' || {column} || ' is not a whole number') END"
    )


def _expression(column: str, file_type: str, field: pa.Field) -> str:
    """SQL turning a file column of DuckDB type `file_type` into the pinned field."""
    target = _SQL_TYPE[field.type]
    if file_type == '"NULL"':  # an all-NULL column written with the null type
        return f"CAST(NULL AS {target})"
    fractional = file_type in ("DOUBLE", "FLOAT") or file_type.startswith("DECIMAL")
    if field.type == INT and fractional:
        return _whole(column, field.name, "BIGINT")
    if field.type == STRING and fractional:  # a flag written as 1.0: "1", as the CSV files have it
        return f"CAST({_whole(column, field.name, 'BIGINT')} AS VARCHAR)"
    return f"CAST({column} AS {target})"


def parquet_batches(path: Path, color: str, file_label: str) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches of the color's pinned schema."""
    pinned = TRIP_SCHEMAS[color]
    with duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": THREADS}) as conn:
        conn.execute("SET enable_progress_bar = false")
        try:
            described = conn.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}).fetchall()
        except duckdb.Error as exc:
            raise BadTripFile(f"{file_label}: not a readable Parquet file: {exc}") from exc
        file_types: dict[str, tuple[str, str]] = {}  # pinned name -> (file column, DuckDB type)
        unknown = []
        for column, duck_type, *_ in described:
            name = canonical_column(color, column)
            if name is None or name in file_types:
                unknown.append(column)
            else:
                file_types[name] = (column, duck_type)
        missing = [n for n in pinned.names if n not in file_types and n not in OPTIONAL_COLUMNS[color]]
        if unknown or missing:
            problems = [f"unexpected column(s) {unknown}"] if unknown else []
            problems += [f"missing column(s) {missing}"] if missing else []
            raise BadTripFile(
                f"{file_label}: wrong columns for a {color} trip file: {'; '.join(problems)}. "
                f"The file has {[c for c, *_ in described]}; expected {pinned.names}"
            )
        select = ", ".join(
            (
                _expression(_quote(file_types[f.name][0]), file_types[f.name][1], f)
                if f.name in file_types
                else f"CAST(NULL AS {_SQL_TYPE[f.type]})"
            )
            + f" AS {_quote(f.name)}"
            for f in pinned
        )
        sql = f"SELECT {select} FROM read_parquet($path, file_row_number = true)"
        try:
            reader = conn.sql(sql, params={"path": str(path)}).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                yield pa.RecordBatch.from_arrays(
                    [column.cast(field.type) for column, field in zip(batch.columns, pinned, strict=True)],
                    schema=pinned,
                )
        except duckdb.InvalidInputException as exc:  # error() from _whole
            raise BadTripFile(f"{file_label}: {str(exc).removeprefix('Invalid Input Error: ')}") from exc
        except duckdb.Error as exc:
            raise BadTripFile(f"{file_label}: unreadable: {exc}") from exc
