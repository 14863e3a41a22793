"""Raw release CSV (gzip) -> typed Parquet with the color's pinned schema, streamed batch by batch.

Memory stays bounded whatever the month's size: the CSV is parsed in blocks on one thread, a few
blocks ahead of the main thread, which casts each block to the pinned schema, buffers blocks until
a row group is full and writes it. Statistics for the asset's metadata and checks are gathered on
the way.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from taxi_assets.schema import (
    DROPOFF_COLUMN,
    INT,
    OPTIONAL_COLUMNS,
    PICKUP_COLUMN,
    TIMESTAMP,
    TRIP_SCHEMAS,
    canonical_column,
)

# Figures measured on generated yellow months, 2 cores (benchmarks/run.py):
CSV_BLOCK_BYTES = 2 << 20  # ~22k rows; 8 MB blocks held 2.3x the Arrow memory (7.7M rows: 461 vs 204 MB)
ROW_GROUP_ROWS = 512 * 1024  # 1M-row groups were 2% smaller and held twice the memory
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3  # 9% smaller than level 1 at the same speed; levels 6 and 9 gained nothing
PREFETCH_BATCHES = 16  # ~32 MB of CSV: keeps the parser busy while a row group is encoded
CSV_PARSE_THREADS = False  # Arrow's CSV thread pool competed with the Parquet encoder for the 2 cores
PREVIEW_ROWS = 5


class BadTripFile(ValueError):
    """The raw file does not match its color's pinned layout; the message says where and how."""


@dataclass
class CleanResult:
    rows: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    pickups_outside_month: int = 0
    dropoffs_before_pickup: int = 0
    min_pickup: dt.datetime | None = None
    max_pickup: dt.datetime | None = None
    preview: pa.Table | None = None
    parquet_bytes: int = 0
    seconds: float = 0.0


def read_header(raw_path: Path) -> list[str]:
    with igzip.open(raw_path, "rt", newline="") as text:
        first = text.readline()
    return next(csv.reader([first]), [])


def header_to_pinned(color: str, header: list[str], file_label: str) -> list[str]:
    """The pinned name of each header cell, in file order; fails on anything unexpected."""
    pinned = TRIP_SCHEMAS[color]
    names: list[str] = []
    unknown = []
    for cell in header:
        name = canonical_column(color, cell)
        if name is None or name in names:
            unknown.append(cell)
        else:
            names.append(name)
    missing = [n for n in pinned.names if n not in names and n not in OPTIONAL_COLUMNS[color]]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unexpected column(s) {unknown}")
        if missing:
            problems.append(f"missing column(s) {missing}")
        raise BadTripFile(
            f"{file_label}: wrong header for a {color} trip file: {'; '.join(problems)}. "
            f"Header was {header}; expected {pinned.names}"
        )
    return names


def _read_types(color: str, names: list[str], integers_as_floats: bool) -> dict[str, pa.DataType]:
    """Types to parse with: the pinned ones, or, for files that write integers as "1.0", float64
    for the integer columns (cast back to int64 with a check that nothing is truncated)."""
    pinned = TRIP_SCHEMAS[color]
    return {
        n: (pa.float64() if integers_as_floats and pinned.field(n).type == INT else pinned.field(n).type) for n in names
    }


def _open_reader(raw_path: Path, names: list[str], types: dict[str, pa.DataType], include=None):
    # ISA-L inflates 4x faster than zlib (Arrow's own gzip stream): the parse thread spends less
    # than a second instead of two decompressing a 7.7M-row month.
    return pacsv.open_csv(
        igzip.open(raw_path, "rb"),
        read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=1, block_size=CSV_BLOCK_BYTES, use_threads=CSV_PARSE_THREADS
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, include_columns=include),
    )


def _prefetched(reader: pacsv.CSVStreamingReader, depth: int = PREFETCH_BATCHES) -> Iterator[pa.RecordBatch]:
    """The reader's batches, parsed ahead on a second thread while this one converts and writes.

    Arrow releases the GIL in both, so on two cores parsing and Parquet encoding overlap; the
    queue bound keeps memory at a few blocks.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        """Queue an item unless the consumer has stopped; never blocks past a stop."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def parse() -> None:
        try:
            for batch in reader:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    thread = threading.Thread(target=parse, name="csv-parse", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _to_pinned(batch: pa.RecordBatch, color: str, rows_before: int, file_label: str) -> pa.RecordBatch:
    pinned = TRIP_SCHEMAS[color]
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


def _count_true(mask: pa.Array) -> int:
    return pc.sum(mask).as_py() or 0


def _first_bad_value(raw_path: Path, names: list[str], column: str, target: pa.DataType) -> tuple[int, str] | None:
    """Slow path, only after a failure: the line and text of the first value of `column` that
    does not convert to `target`."""
    reader = _open_reader(raw_path, names, {n: pa.string() for n in names}, include=[column])
    rows_before = 0
    for batch in reader:
        values = batch.column(0)
        lo, hi = 0, len(values)
        try:
            values.cast(target)
        except pa.ArrowInvalid:
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


def _first_misshapen_line(raw_path: Path, expected_fields: int) -> tuple[int, str] | None:
    with igzip.open(raw_path, "rt", newline="") as text:
        for line_number, row in enumerate(csv.reader(text), start=1):
            if len(row) != expected_fields:
                return line_number, ",".join(row)
    return None


class _IntegersWrittenAsFloats(Exception):
    """An integer column holds values like "264.0": parse the file again with float integers."""


_INTEGRAL_FLOAT = re.compile(r"-?\d+\.0*")


@dataclass(frozen=True)
class _Diagnosis:
    message: str
    integers_written_as_floats: bool = False


def _diagnose(exc: Exception, raw_path: Path, names: list[str], types: dict[str, pa.DataType]) -> _Diagnosis:
    """What an Arrow parse error means, located by column and line (re-reads the file: error path only)."""
    message = str(exc)
    converting = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error", message)
    if converting:
        column = names[int(converting.group(1))]
        found = _first_bad_value(raw_path, names, column, types[column])
        if not found:
            return _Diagnosis(f"column {column!r}: {message}")
        line, value = found
        return _Diagnosis(
            f"column {column!r}, line {line}: cannot read {value!r} as {types[column]}",
            integers_written_as_floats=types[column] == INT and bool(_INTEGRAL_FLOAT.fullmatch(value)),
        )
    if "Expected" in message and "columns" in message:
        found = _first_misshapen_line(raw_path, len(names))
        if found:
            line, text = found
            return _Diagnosis(f"line {line}: expected {len(names)} fields: {text[:200]!r} ({message[:120]})")
    return _Diagnosis(f"unreadable: {message}")


def clean_trip_file(
    raw_path: Path,
    out_path: Path,
    *,
    color: str,
    month_start: dt.date,
    month_end: dt.date,
    file_label: str,
) -> CleanResult:
    """Parse a raw release file into Parquet at `out_path` with the color's pinned schema.

    Raises BadTripFile naming the file, the column and the line for a wrong header or a value
    that does not parse. On failure `out_path` is removed.
    """
    started = time.perf_counter()
    try:
        header = read_header(raw_path)
    except (OSError, EOFError) as exc:
        raise BadTripFile(f"{file_label}: not a readable gzip file: {exc}") from exc
    names = header_to_pinned(color, header, file_label)
    write = functools.partial(_write_parquet, raw_path, out_path, color, names, month_start, month_end, file_label)
    try:
        result = write(_read_types(color, names, integers_as_floats=False))
    except _IntegersWrittenAsFloats:
        result = write(_read_types(color, names, integers_as_floats=True))
    result.seconds = time.perf_counter() - started
    return result


def _write_parquet(
    raw_path: Path,
    out_path: Path,
    color: str,
    names: list[str],
    month_start: dt.date,
    month_end: dt.date,
    file_label: str,
    types: dict[str, pa.DataType],
) -> CleanResult:
    pinned = TRIP_SCHEMAS[color]
    pickup_col, dropoff_col = PICKUP_COLUMN[color], DROPOFF_COLUMN[color]
    start = pa.scalar(dt.datetime.combine(month_start, dt.time()), type=pinned.field(pickup_col).type)
    end = pa.scalar(dt.datetime.combine(month_end, dt.time()), type=pinned.field(pickup_col).type)

    result = CleanResult(null_counts={n: 0 for n in pinned.names})
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        with pq.ParquetWriter(
            out_path,
            pinned,
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
            # Timestamps are nearly unique: a dictionary is built, overflows and is thrown away.
            # Without it, 1.37M rows write 10% faster into a 6% smaller file.
            use_dictionary=[f.name for f in pinned if f.type != TIMESTAMP],
        ) as writer:
            try:
                for raw_batch in _prefetched(_open_reader(raw_path, names, types)):
                    batch = _to_pinned(raw_batch, color, result.rows, file_label)
                    _accumulate(result, batch, pickup_col, dropoff_col, start, end)
                    pending.append(batch)
                    pending_rows += batch.num_rows
                    if pending_rows >= ROW_GROUP_ROWS:
                        writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
                        pending, pending_rows = [], 0
                        # Hand freed blocks back to the OS: the allocator would keep them cached,
                        # and the warehouse load that follows in the same process needs room.
                        pa.default_memory_pool().release_unused()
            except pa.ArrowInvalid as exc:
                diagnosis = _diagnose(exc, raw_path, names, types)
                if diagnosis.integers_written_as_floats:
                    raise _IntegersWrittenAsFloats from exc
                raise BadTripFile(f"{file_label}: {diagnosis.message}") from exc
            except (OSError, EOFError) as exc:  # EOFError: a gzip stream cut short
                raise BadTripFile(f"{file_label}: unreadable: {exc}") from exc
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        pending.clear()
        pa.default_memory_pool().release_unused()
    result.parquet_bytes = out_path.stat().st_size
    return result


def _accumulate(result: CleanResult, batch: pa.RecordBatch, pickup_col, dropoff_col, start, end) -> None:
    if result.preview is None:
        result.preview = pa.Table.from_batches([batch.slice(0, PREVIEW_ROWS)])
    result.rows += batch.num_rows
    for name in batch.schema.names:
        result.null_counts[name] += batch.column(name).null_count
    pickup, dropoff = batch.column(pickup_col), batch.column(dropoff_col)
    outside = pc.or_(pc.less(pickup, start), pc.greater_equal(pickup, end))
    result.pickups_outside_month += _count_true(outside)
    result.dropoffs_before_pickup += _count_true(pc.less(dropoff, pickup))
    bounds = pc.min_max(pickup)
    for attr, value, better in (("min_pickup", bounds["min"].as_py(), min), ("max_pickup", bounds["max"].as_py(), max)):
        if value is not None:
            current = getattr(result, attr)
            setattr(result, attr, value if current is None else better(current, value))
