"""Reading a raw release file: its header, its CSV blocks, and what a parse error means.

The gzip stream is inflated by ISA-L, several times faster than zlib (Arrow's own gzip stream),
which saves the parse thread time (figures: docs/performance.md#tuned-settings).
"""

from __future__ import annotations

import contextlib
import csv
import re
import threading
import time
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

# Tuned on generated yellow months, 2 cores (benchmarks/run.py; figures: docs/performance.md#tuned-settings):
CSV_BLOCK_BYTES = 2 << 20  # bigger blocks held more Arrow memory for the same speed
# Enough blocks to keep the parser busy while a row group is encoded; a deeper queue only made
# small months wait for it to fill.
PREFETCH_BATCHES = 4
CSV_PARSE_THREADS = False  # Arrow's CSV thread pool competed with the Parquet encoder for the 2 cores


# A header is a few hundred bytes; a line this long is not one (a gzip bomb of NULs without a
# newline would otherwise be read whole into memory).
MAX_HEADER_BYTES = 64 << 10
# The error path re-reads the file line by line to locate a problem: lines are read at most this
# long, so a giant line cannot take the memory the parser was kept from taking.
MAX_DIAGNOSED_LINE_BYTES = 1 << 20


def read_header(raw_path: Path, file_label: str) -> list[str]:
    """The raw CSV.gz file's column names; an unreadable or overlong first line is a BadTripFile naming the file."""
    try:
        with igzip.open(raw_path, "rt", newline="") as text:
            first = text.readline(MAX_HEADER_BYTES)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BadTripFile(f"{file_label}: not a readable gzip file: {shorten(str(exc))}") from None
    if len(first) >= MAX_HEADER_BYTES and not first.endswith("\n"):
        raise BadTripFile(f"{file_label}: the first line is longer than {MAX_HEADER_BYTES} bytes: not a CSV header")
    try:
        return next(csv.reader([first]), [])
    except csv.Error as exc:
        raise BadTripFile(f"{file_label}: the first line is not a CSV header: {shorten(str(exc))}") from None


def bounded_lines(path: Path) -> Iterator[str]:
    """The file's text lines, each cut at MAX_DIAGNOSED_LINE_BYTES (the rest of a longer line is
    skipped), so locating a problem never holds a giant line."""
    with igzip.open(path, "rt", newline="") as text:
        while line := text.readline(MAX_DIAGNOSED_LINE_BYTES):
            if len(line) >= MAX_DIAGNOSED_LINE_BYTES and not line.endswith("\n"):
                while (rest := text.readline(MAX_DIAGNOSED_LINE_BYTES)) and not rest.endswith("\n"):
                    pass
            yield line


def shorten(text: str, limit: int = 200) -> str:
    """A message part cut to `limit` characters, saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def header_to_pinned(color: str, pinned: pa.Schema, header: list[str], file_label: str) -> list[str]:
    """The pinned name of each header cell, in file order; fails on anything unexpected."""
    return list(pin_columns(color, pinned, header, file_label, "header"))


class _StoppableStream:
    """The inflated file as Arrow reads it. Arrow's streaming reader reads ahead on a thread of its
    own (even with use_threads=False), which closing the reader does not wait for: a read still on
    its way into Python when the interpreter exits aborts the process ("terminate called without
    an active exception"; 1 in 20 after a parse error on a gzip bomb). `stop` makes later reads
    return end-of-file, waits for one in progress, and, unless the stream was read to its end,
    until Arrow has stopped asking."""

    QUIET_SECONDS = 0.05  # no read asked for this long: Arrow's reader has let go of the file
    MAX_WAIT_SECONDS = 2.0

    def __init__(self, raw):
        self._raw = raw
        self._lock = threading.Condition()
        self._reading = self._stopped = self._at_end = False
        self._last_asked = time.monotonic()

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            self._last_asked = time.monotonic()
            if self._stopped or self._at_end:
                return b""
            self._reading = True
        try:
            data = self._raw.read(size)
        finally:
            with self._lock:
                self._reading = False
                self._lock.notify_all()
        if not data:
            self._at_end = True
        return data

    @property
    def closed(self) -> bool:
        return self._stopped or self._raw.closed

    def readable(self) -> bool:
        return True

    def stop(self) -> None:
        deadline = time.monotonic() + self.MAX_WAIT_SECONDS
        with self._lock:
            self._stopped = True
            self._lock.wait_for(lambda: not self._reading, self.MAX_WAIT_SECONDS)
            if self._at_end:
                return
            while (quiet := time.monotonic() - self._last_asked) < self.QUIET_SECONDS:
                if time.monotonic() > deadline:
                    return
                self._lock.wait(self.QUIET_SECONDS - quiet)


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

    @contextlib.contextmanager
    def _reader(
        self, types: dict[str, pa.DataType], include: list[str] | None = None
    ) -> Iterator[pacsv.CSVStreamingReader]:
        """Arrow's streaming reader over the inflated file, closed (with the file) on the way out:
        a reader left to the garbage collector after an error could still be reading the Python
        file from Arrow's own thread when the interpreter exits, which aborts the process."""
        with igzip.open(self.path, "rb") as raw:
            stream = _StoppableStream(raw)
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    column_names=self.names, skip_rows=1, block_size=CSV_BLOCK_BYTES, use_threads=CSV_PARSE_THREADS
                ),
                parse_options=pacsv.ParseOptions(newlines_in_values=False, invalid_row_handler=self.on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, strings_can_be_null=True, include_columns=include
                ),
            )
            try:
                yield reader
            finally:
                reader.close()
                stream.stop()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The file's record batches, parsed a few blocks ahead on a second thread. A parse error
        becomes BadTripFile naming the column and line (or IntegersWrittenAsFloats)."""
        try:
            with self._reader(self.types) as reader:
                yield from prefetched(reader, PREFETCH_BATCHES, name="csv-parse")
        except pa.ArrowInvalid as exc:
            self._diagnose(exc)
            raise BadTripFile(f"{self.file_label}: unreadable: {shorten(str(exc))}") from exc
        except (OSError, EOFError) as exc:  # EOFError: a gzip stream cut short
            raise BadTripFile(f"{self.file_label}: unreadable: {shorten(str(exc))}") from exc

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
                raise BadTripFile(f"{self.file_label}: column {column!r}: {shorten(message)}") from exc
            line, value = found
            if target == INT and _INTEGRAL_FLOAT.fullmatch(value):
                raise IntegersWrittenAsFloats(column) from exc
            raise BadTripFile(
                f"{self.file_label}: column {column!r}, line {line}: cannot read {shorten(repr(value))} as {target}"
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
        with self._reader({n: pa.string() for n in self.names}, include=[column]) as reader:
            return self._first_failing_value(reader, target)

    @staticmethod
    def _first_failing_value(reader: pacsv.CSVStreamingReader, target: pa.DataType) -> tuple[int, str] | None:
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
        try:
            for line_number, row in enumerate(csv.reader(bounded_lines(self.path)), start=1):
                if len(row) != len(self.names):
                    return line_number, ",".join(row)
        except csv.Error:  # a field beyond the csv module's limit: the parser's own message stands
            return None
        return None


_INTEGRAL_FLOAT = re.compile(r"-?\d+\.0*")
