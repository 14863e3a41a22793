"""Reading one of the TLC's own Parquet files into the color's pinned schema, batch by batch.

The TLC's files change types across eras: ids as INT32, INT64 or DOUBLE; strings as string or
large_string; all-NULL columns written with the null type; `airport_fee` as `Airport_fee` from
2023-02; `cbd_congestion_fee` only from 2025-01; fhv's mixed casings. Each batch's columns are cast
to their pinned types; a DOUBLE that must become an integer is checked first: a fraction fails the
month naming the column, the row and the value, as the CSV path does.

A month written as one row group (yellow 2023-01 is) must not be read whole: pyarrow's batch
reader with a small read buffer and no pre-buffering decodes a page at a time. Measured on a
generated 20M-row fhvhv month in one row group (746 MB): 237 MB peak RSS reading it all with a 1 MB
buffer and 64k-row batches, 338 MB with 8 MB and 128k. DuckDB's reader (tried first) allocates a
whole column chunk: 711 MB for one column of that file, out of memory under a 256 MB cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.cleaning.columns import pin_columns
from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.schema import INT, STRING

BATCH_ROWS = 64 * 1024
READ_BUFFER_BYTES = 1 << 20


def _whole_numbers(column: pa.Array, name: str, rows_before: int, file_label: str) -> pa.Array:
    """A floating-point column as int64, or BadTripFile naming the first value with a fraction."""
    try:
        return column.cast(INT, safe=True)
    except pa.ArrowInvalid as exc:
        fractional = pc.fill_null(pc.not_equal(column, pc.floor(column)), False)
        index = pc.index(fractional, True).as_py()
        value = column[index].as_py()
        raise BadTripFile(
            f"{file_label}: column {name!r}, row {rows_before + index + 1}: value {value!r} is not a whole number"
        ) from exc


def _to_pinned(column: pa.Array, field: pa.Field, rows_before: int, file_label: str) -> pa.Array:
    if pa.types.is_null(column.type):  # an all-NULL column written with the null type
        return pa.nulls(len(column), field.type)
    floating = pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)
    if floating and field.type == INT:
        return _whole_numbers(column, field.name, rows_before, file_label)
    if floating and field.type == STRING:  # a flag written as 1.0: "1", as the CSV files have it
        return _whole_numbers(column, field.name, rows_before, file_label).cast(STRING)
    return column.cast(field.type, safe=True)


def parquet_batches(path: Path, color: str, pinned: pa.Schema, file_label: str) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches of the color's pinned schema."""
    try:
        parquet = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadTripFile(f"{file_label}: not a readable Parquet file: {exc}") from exc
    in_file = pin_columns(color, pinned, parquet.schema_arrow.names, file_label, "columns")  # pinned name -> file's
    rows_before = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(in_file.values()), use_threads=False):
            columns = [
                _to_pinned(batch.column(in_file[f.name]), f, rows_before, file_label)
                if f.name in in_file
                else pa.nulls(batch.num_rows, f.type)
                for f in pinned
            ]
            rows_before += batch.num_rows
            yield pa.RecordBatch.from_arrays(columns, schema=pinned)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadTripFile(f"{file_label}: unreadable: {exc}") from exc
