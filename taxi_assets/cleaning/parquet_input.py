"""Reading one of the TLC's own Parquet files into the color's pinned schema, batch by batch.

The TLC's files change types across eras: ids as INT32, INT64 or DOUBLE; strings as string or
large_string; all-NULL columns written with the null type; `airport_fee` as `Airport_fee` from
2023-02; `cbd_congestion_fee` only from 2025-01; fhv's mixed casings. Each batch's columns are cast
to their pinned types; a DOUBLE that must become an integer is checked first: a fraction fails the
month naming the column, the row and the value, as the CSV path does.

A month written as one row group (yellow 2023-01 is) must not be read whole: pyarrow's batch
reader with a small read buffer and no pre-buffering decodes a page at a time; a 1 MB buffer and
64k-row batches held the least memory. DuckDB's reader (tried first) allocates a whole column chunk
and ran out of memory under its cap. Figures: docs/decisions.md#bounded-memory-on-parquet-input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.cleaning.columns import pin_columns
from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.cleaning.parse import shorten
from taxi_assets.schema import INT, STRING

BATCH_ROWS = 64 * 1024
READ_BUFFER_BYTES = 1 << 20
# A batch's decoded size, whatever its rows hold: 64k rows of one dictionary-encoded 20 KB string
# (a 2 MB file) decode to 1.3 GB. Strings are read dictionary-encoded and decoded a slice at a time.
BATCH_BYTES = 16 << 20
# One column chunk's uncompressed size, its dictionary page included: real months' stay far below
# it; a compressed dictionary page of a huge string would be read whole before any batch.
MAX_COLUMN_CHUNK_BYTES = 1 << 30


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
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_null(column.type):  # an all-NULL column written with the null type
        return pa.nulls(len(column), field.type)
    floating = pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)
    if floating and field.type == INT:
        return _whole_numbers(column, field.name, rows_before, file_label)
    if floating and field.type == STRING:  # a flag written as 1.0: "1", as the CSV files have it
        return _whole_numbers(column, field.name, rows_before, file_label).cast(STRING)
    return column.cast(field.type, safe=True)


def _row_bytes(batch: pa.RecordBatch) -> pa.Array:
    """Each row's decoded size in bytes, counting dictionary-encoded strings at their values' length
    (fixed-width columns at their width; anything else at the batch's average)."""
    sizes = pa.array([0] * batch.num_rows, pa.int64())
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.binary_length(column.dictionary).cast(pa.int64())
            per_row = pc.fill_null(pc.take(lengths, column.indices), 0)
        else:
            per_row = pa.scalar(column.nbytes // max(batch.num_rows, 1), pa.int64())
        sizes = pc.add(sizes, per_row)
    return sizes


def _slices(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """The batch in slices of at most BATCH_BYTES decoded (at least one row each)."""
    ends = pc.cumulative_sum(_row_bytes(batch)).to_numpy()
    start = 0
    while start < batch.num_rows:
        taken = int(ends[start - 1]) if start else 0
        stop = max(int((ends <= taken + BATCH_BYTES).sum()), start + 1)
        yield batch.slice(start, stop - start)
        start = stop


def _check_column_chunks(parquet: pq.ParquetFile, file_label: str) -> None:
    meta = parquet.metadata
    for group in range(meta.num_row_groups):
        for index in range(meta.num_columns):
            chunk = meta.row_group(group).column(index)
            if chunk.total_uncompressed_size > MAX_COLUMN_CHUNK_BYTES:
                raise BadTripFile(
                    f"{file_label}: column {chunk.path_in_schema!r} of row group {group} is "
                    f"{chunk.total_uncompressed_size:,} bytes uncompressed, over the limit of "
                    f"{MAX_COLUMN_CHUNK_BYTES:,} (MAX_COLUMN_CHUNK_BYTES)"
                )


def parquet_batches(path: Path, color: str, pinned: pa.Schema, file_label: str) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches of the color's pinned schema, each at most BATCH_ROWS
    rows and about BATCH_BYTES decoded."""
    try:
        schema = pq.read_schema(path)
        strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        parquet = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False, read_dictionary=strings)
        _check_column_chunks(parquet, file_label)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadTripFile(f"{file_label}: not a readable Parquet file: {shorten(str(exc))}") from None
    in_file = pin_columns(color, pinned, parquet.schema_arrow.names, file_label, "columns")  # pinned name -> file's
    rows_before = 0
    try:
        for whole in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(in_file.values()), use_threads=False):
            for batch in _slices(whole):
                columns = [
                    _to_pinned(batch.column(in_file[f.name]), f, rows_before, file_label)
                    if f.name in in_file
                    else pa.nulls(batch.num_rows, f.type)
                    for f in pinned
                ]
                rows_before += batch.num_rows
                yield pa.RecordBatch.from_arrays(columns, schema=pinned)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadTripFile(f"{file_label}: unreadable: {shorten(str(exc))}") from None
