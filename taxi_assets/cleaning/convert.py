"""A raw trip file of either source TAXI_SOURCE picks (a DataTalksClub release's CSV.gz, or one of
the TLC's Parquet files) -> typed Parquet with the color's pinned schema, streamed batch by batch.

Memory stays bounded whatever the month's size: the input is read in blocks on one thread, a few
blocks ahead of this one (a CSV by `parse.py`, a Parquet file by `parquet_input.py`), which sets a
block's bad rows aside if asked to (`quarantine.py`), casts the block to the pinned schema (`cast.py`),
counts what the checks need (`stats.py`), and buffers blocks until a row group is full.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.cleaning.cast import to_pinned
from taxi_assets.cleaning.errors import IntegersWrittenAsFloats
from taxi_assets.cleaning.parquet_input import parquet_batches
from taxi_assets.cleaning.parse import CsvSource, header_to_pinned, read_header
from taxi_assets.cleaning.prefetch import prefetched
from taxi_assets.cleaning.quarantine import Rejected, split_block, write_rejected
from taxi_assets.cleaning.stats import CleanResult, MonthStats
from taxi_assets.schema import TIMESTAMP

PARQUET_PREFETCH = 4  # 64k-row batches read ahead of the writer: enough to keep it busy, few enough to bound memory
# Why these three (figures: docs/performance.md#tuned-settings):
# 128k rows, DuckDB's own row group size (122,880): a small month's last row group, encoded after
# the parser is done, is short, and the warehouse reads the file on all its threads (DuckDB takes a
# row group per thread: a few big groups left threads idle). Files come out slightly bigger than
# with bigger groups.
ROW_GROUP_ROWS = 128 * 1024
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3  # smaller than level 1 at the same speed; levels 6 and 9 gained nothing


# And at most this much buffered, whatever the rows hold: a typical month's 128k rows stay well under
# it; rows of long strings would otherwise buffer gigabytes before a row group is written.
ROW_GROUP_BYTES = 128 << 20


class RowGroups:
    """Collects batches and writes a Parquet row group each time ROW_GROUP_ROWS or ROW_GROUP_BYTES
    are buffered."""

    def __init__(self, out_path: Path, schema: pa.Schema):
        self.writer = pq.ParquetWriter(
            out_path,
            schema,
            compression=PARQUET_COMPRESSION,
            compression_level=PARQUET_COMPRESSION_LEVEL,
            # Timestamps are nearly unique: a dictionary is built, overflows and is thrown away.
            # Without it, files write faster and come out smaller (docs/performance.md#tuned-settings).
            use_dictionary=[f.name for f in schema if f.type != TIMESTAMP],
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.pending_bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Buffer a batch; write a row group once enough rows or bytes are buffered."""
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        unusual = self.pending_bytes >= ROW_GROUP_BYTES  # rows of long strings, not a typical month's
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=self.pending_rows)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        # A typical row group's freed blocks stay with the allocator for the next one (handing them
        # back to the OS after each made the next fault them in again); clean_trip_file hands them
        # back at the end, for the warehouse load that follows in the same process. A group cut by
        # its bytes is handed back at once: kept, such blocks raised the peak of rows of long
        # strings (figures: docs/performance.md#tuned-settings).
        if unusual:
            pa.default_memory_pool().release_unused()

    def close(self) -> None:
        """Write what is still buffered and finish the file (its footer)."""
        self._flush()
        self.writer.close()


def _convert(
    batches: Iterator[pa.RecordBatch],
    out_path: Path,
    pinned: pa.Schema,
    stats: MonthStats,
    rejected: Rejected | None,
    file_label: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    row_groups = RowGroups(out_path, pinned)
    parsed = 0
    try:
        for raw_batch in batches:
            if rejected is not None:  # quarantine: text in, the convertible rows out
                rows_in_block = raw_batch.num_rows
                raw_batch = split_block(raw_batch, pinned, parsed, rejected)
                parsed += rows_in_block
            batch = to_pinned(raw_batch, pinned, stats.result.rows, file_label)
            stats.add(batch)
            row_groups.add(batch)
            if on_progress is not None:
                on_progress(stats.result.rows, len(rejected.reasons) if rejected is not None else 0)
    finally:
        row_groups.close()


def clean_trip_file(
    raw_path: Path,
    out_path: Path,
    *,
    color: str,
    schema: pa.Schema,
    month_start: dt.date,
    month_end: dt.date,
    file_label: str,
    rejected_path: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CleanResult:
    """Parse a raw file (a release's CSV.gz, or one of the TLC's Parquet files) into Parquet at
    `out_path` with the color's pinned `schema` (the source's, `Source.schemas[color]`).

    Raises BadTripFile naming the file, the column and the line for a wrong header or a value
    that does not parse. With `rejected_path` (quarantine), rows that do not parse are set aside
    instead, written there with their line numbers and reasons (no file when there are none). On
    failure `out_path` and `rejected_path` are removed. `on_progress(rows written, rows rejected)`
    is called after each batch.
    """
    started = time.perf_counter()
    stats = MonthStats(color, schema, month_start, month_end)
    try:
        if raw_path.name.endswith(".parquet"):  # the TLC's own files: typed already, cast per era
            # Read and cast on a second thread while this one counts and encodes.
            batches = prefetched(
                parquet_batches(raw_path, color, schema, file_label), PARQUET_PREFETCH, name="parquet-read"
            )
            _convert(batches, out_path, schema, stats, None, file_label, on_progress)
        elif rejected_path is not None:
            names = header_to_pinned(color, schema, read_header(raw_path, file_label), file_label)
            rejected = Rejected()
            source = CsvSource.as_text(raw_path, names, file_label, rejected.on_invalid_row)
            _convert(source.batches(), out_path, schema, stats, rejected, file_label, on_progress)
            stats.result.rows_rejected = len(rejected.reasons)
            if rejected.reasons:
                write_rejected(raw_path, rejected, rejected_path)
        else:
            names = header_to_pinned(color, schema, read_header(raw_path, file_label), file_label)
            try:
                source = CsvSource.with_schema(raw_path, schema, names, file_label)
                _convert(source.batches(), out_path, schema, stats, None, file_label, on_progress)
            except IntegersWrittenAsFloats:
                stats = MonthStats(color, schema, month_start, month_end)
                source = CsvSource.with_schema(raw_path, schema, names, file_label, integers_as_floats=True)
                _convert(source.batches(), out_path, schema, stats, None, file_label, on_progress)
    except BaseException:
        out_path.unlink(missing_ok=True)
        if rejected_path is not None:
            rejected_path.unlink(missing_ok=True)
        raise
    finally:
        pa.default_memory_pool().release_unused()
    stats.result.seconds = time.perf_counter() - started
    return stats.result
