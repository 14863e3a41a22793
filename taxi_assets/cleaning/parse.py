"""Reading a raw release file: its header, its CSV blocks, and what a parse error means.

The gzip stream is inflated by ISA-L, 4x faster than zlib (Arrow's own gzip stream): the parse
thread spends under a second instead of two decompressing a 7.7M-row month.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from isal import igzip

from taxi_assets.cleaning.columns import pin_columns
from taxi_assets.cleaning.errors import BadTripFile, IntegersWrittenAsFloats
from taxi_assets.cleaning.prefetch import prefetched
from taxi_assets.schema import INT

# Figures measured on generated yellow months, 2 cores (benchmarks/run.py):
CSV_BLOCK_BYTES = 2 << 20  # ~22k rows; 8 MB blocks held 2.3x the Arrow memory (7.7M rows: 461 vs 204 MB)
PREFETCH_BATCHES = 16  # ~32 MB of CSV: keeps the parser busy while a row group is encoded
CSV_PARSE_THREADS = False  # Arrow's CSV thread pool competed with the Parquet encoder for the 2 cores


def read_header(raw_path: Path, file_label: str) -> list[str]:
    try:
        with igzip.open(raw_path, "rt", newline="") as text:
            first = text.readline()
    except (OSError, EOFError) as exc:
        raise BadTripFile(f"{file_label}: not a readable gzip file: {exc}") from exc
    return next(csv.reader([first]), [])


def header_to_pinned(color: str, pinned: pa.Schema, header: list[str], file_label: str) -> list[str]:
    """The pinned name of each header cell, in file order; fails on anything unexpected."""
    return list(pin_columns(color, pinned, header, file_label, "header"))


@dataclass(frozen=True)
class CsvSource:
    """One raw file to parse: its path, its columns' pinned names (in file order) and the types to
    parse them with."""

    path: Path
    names: list[str]
    types: dict[str, pa.DataType]
    file_label: str
    # Rows with the wrong number of fields: an error (None), or handed to this and skipped.
    on_invalid_row: Callable | None = None

    @classmethod
    def with_schema(
        cls, path: Path, pinned: pa.Schema, names: list[str], file_label: str, integers_as_floats: bool = False
    ):
        """The pinned types; or, for files that write integers as "1.0", float64 for the integer
        columns (cast back to int64 with a check that nothing is truncated)."""
        types = {
            n: pa.float64() if integers_as_floats and pinned.field(n).type == INT else pinned.field(n).type
            for n in names
        }
        return cls(path, names, types, file_label)

    @classmethod
    def as_text(cls, path: Path, names: list[str], file_label: str, on_invalid_row: Callable):
        """Every column as text, rows of the wrong shape handed to `on_invalid_row` (quarantine)."""
        return cls(path, names, dict.fromkeys(names, pa.string()), file_label, on_invalid_row)

    def _reader(self, types: dict[str, pa.DataType], include: list[str] | None = None) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            igzip.open(self.path, "rb"),
            read_options=pacsv.ReadOptions(
                column_names=self.names, skip_rows=1, block_size=CSV_BLOCK_BYTES, use_threads=CSV_PARSE_THREADS
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, invalid_row_handler=self.on_invalid_row),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, include_columns=include),
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The file's record batches, parsed a few blocks ahead on a second thread. A parse error
        becomes BadTripFile naming the column and line (or IntegersWrittenAsFloats)."""
        try:
            yield from prefetched(self._reader(self.types), PREFETCH_BATCHES, name="csv-parse")
        except pa.ArrowInvalid as exc:
            self._diagnose(exc)
            raise BadTripFile(f"{self.file_label}: unreadable: {exc}") from exc
        except (OSError, EOFError) as exc:  # EOFError: a gzip stream cut short
            raise BadTripFile(f"{self.file_label}: unreadable: {exc}") from exc

    # The error path only: re-read the file to say where the problem is.

    def _diagnose(self, exc: pa.ArrowInvalid) -> None:
        """Raise what an Arrow parse error means, located by column and line, if that can be found."""
        message = str(exc)
        converting = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error", message)
        if converting:
            column = self.names[int(converting.group(1))]
            target = self.types[column]
            found = self._first_bad_value(column, target)
            if not found:
                raise BadTripFile(f"{self.file_label}: column {column!r}: {message}") from exc
            line, value = found
            if target == INT and _INTEGRAL_FLOAT.fullmatch(value):
                raise IntegersWrittenAsFloats(column) from exc
            raise BadTripFile(
                f"{self.file_label}: column {column!r}, line {line}: cannot read {value!r} as {target}"
            ) from exc
        if "Expected" in message and "columns" in message:
            found = self._first_misshapen_line()
            if found:
                line, text = found
                expected = f"expected {len(self.names)} fields"
                raise BadTripFile(
                    f"{self.file_label}: line {line}: {expected}: {text[:200]!r} ({message[:120]})"
                ) from exc

    def _first_bad_value(self, column: str, target: pa.DataType) -> tuple[int, str] | None:
        """The line and text of the first value of `column` that does not convert to `target`."""
        reader = self._reader({n: pa.string() for n in self.names}, include=[column])
        rows_before = 0
        for batch in reader:
            values = batch.column(0)
            try:
                values.cast(target)
            except pa.ArrowInvalid:
                lo, hi = 0, len(values)
                while hi - lo > 1:  # the smallest failing prefix ends at the bad value
                    mid = (lo + hi) // 2
                    try:
                        values.slice(0, mid).cast(target)
                        lo = mid
                    except pa.ArrowInvalid:
                        hi = mid
                return rows_before + hi - 1 + 2, values[hi - 1].as_py()
            rows_before += len(values)
        return None

    def _first_misshapen_line(self) -> tuple[int, str] | None:
        with igzip.open(self.path, "rt", newline="") as text:
            for line_number, row in enumerate(csv.reader(text), start=1):
                if len(row) != len(self.names):
                    return line_number, ",".join(row)
        return None


_INTEGRAL_FLOAT = re.compile(r"-?\d+\.0*")
