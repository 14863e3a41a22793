"""A parsed CSV block -> the color's pinned schema: columns in pinned order, absent optional
columns as NULLs, integers written as floats cast back only when nothing is truncated."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.cleaning.errors import BadTripFile


def to_pinned(batch: pa.RecordBatch, pinned: pa.Schema, rows_before: int, file_label: str) -> pa.RecordBatch:
    """`rows_before`: data rows of the file before this batch, to name the line of a bad value."""
    arrays = []
    for f in pinned:
        if f.name not in batch.schema.names:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(f.name)
        if column.type != f.type:
            try:
                column = column.cast(f.type, safe=True)
            except pa.ArrowInvalid as exc:
                fractional = pc.not_equal(column, pc.floor(column))
                index = pc.index(fractional, True).as_py()
                raise BadTripFile(
                    f"{file_label}: column {f.name!r}, line {rows_before + index + 2}: "
                    f"value {column[index].as_py()!r} is not a whole number ({exc})"
                ) from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=pinned)
