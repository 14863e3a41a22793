"""Bad rows set aside instead of failing the month (`on_bad_rows: quarantine`).

The file is parsed with every column as text; a row with the wrong number of fields is skipped by
the CSV reader (and noted with its line), and each block is then converted column by column: rows
with a value that does not convert to the pinned type go to the rejected list with the column and
value, the others go on. The rejected lines are then copied whole from the raw file, with their
line numbers and reasons. Counts add up: the file's data lines = rows kept + rows rejected.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from isal import igzip

from taxi_assets.cleaning.parse import bounded_lines
from taxi_assets.schema import INT, TIMESTAMP

_INTEGER_TEXT = r"^\s*[-+]?\d+(\.0*)?\s*$"  # "3", "-2", and "3.0" as some files write integers
_FLOAT_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class Rejected:
    """Rows set aside so far: line number -> reason."""

    reasons: dict[int, str] = field(default_factory=dict)
    # Lines the CSV reader skipped (wrong number of fields), in file order; appended by the parse
    # thread, which is always ahead of the converting one.
    skipped: list[int] = field(default_factory=list)

    def on_invalid_row(self, row) -> str:
        """pyarrow's invalid_row_handler: note the line and skip it."""
        self.reasons[row.number] = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        self.skipped.append(row.number)
        return "skip"

    def line_of(self, parsed_index: int) -> int:
        """The file line of the `parsed_index`-th row the reader returned (0-based; line 1 is the header)."""
        line = parsed_index + 2
        while True:
            shifted = parsed_index + 2 + bisect.bisect_right(self.skipped, line)
            if shifted == line:
                return line
            line = shifted


def _typed(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array | None]:
    """The column converted to `target`, NULL where a value does not convert, and the mask of those
    values (None when every value converted)."""
    try:
        return column.cast(target), None  # the common case: the whole block converts
    except pa.ArrowInvalid:
        pass
    if target == TIMESTAMP:
        values = pc.strptime(column, format=_TIMESTAMP_FORMAT, unit="us", error_is_null=True)
        ok = pc.is_valid(values)
    else:
        ok = pc.match_substring_regex(column, _INTEGER_TEXT if target == INT else _FLOAT_TEXT)
        text = pc.if_else(ok, pc.utf8_trim_whitespace(column), pa.scalar(None, pa.string()))
        if target == INT:
            text = pc.replace_substring_regex(text, r"\.0*$", "")
        values = text.cast(target)
    bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(ok, False)))
    return values, bad


def split_block(batch: pa.RecordBatch, pinned: pa.Schema, first_index: int, rejected: Rejected) -> pa.RecordBatch:
    """The block's convertible rows, typed (in the file's column order); the others are noted in
    `rejected` by line, with the first column that failed. `first_index`: rows parsed before it."""
    arrays, bad_any, first_bad = [], None, {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        target = pinned.field(name).type
        if target == pa.string():
            arrays.append(column)
            continue
        values, bad = _typed(column, target)
        arrays.append(values)
        if bad is not None and pc.any(bad).as_py():
            for index in pc.indices_nonzero(bad).to_pylist():
                first_bad.setdefault(index, f"column {name!r}: cannot read {column[index].as_py()!r} as {target}")
            bad_any = bad if bad_any is None else pc.or_(bad_any, bad)
    typed = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
    if bad_any is None:
        return typed
    for index, reason in first_bad.items():
        rejected.reasons[rejected.line_of(first_index + index)] = reason
    return typed.filter(pc.invert(bad_any))


# What a spreadsheet reads as the start of a formula (OWASP's CSV injection list): such a cell gets
# a leading "'", which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(cell: str) -> str:
    """The cell as text a spreadsheet shows and never runs (a leading `'` before `=`, `+`, `-`, `@`...)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def write_rejected(raw_path: Path, rejected: Rejected, out_path: Path) -> None:
    """`line,reason,text` for each rejected line, the text copied from the raw file (a line longer
    than parse.MAX_DIAGNOSED_LINE_BYTES is cut there; a cell a spreadsheet would run is made inert)."""
    wanted = rejected.reasons
    with igzip.open(out_path, "wt", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "reason", "text"])
        last = max(wanted)
        for number, text in enumerate(bounded_lines(raw_path), start=1):
            if number in wanted:
                writer.writerow([number, inert(wanted[number]), inert(text.rstrip("\r\n"))])
            if number >= last:
                break
