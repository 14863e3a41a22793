"""What a month's rows say about themselves, gathered batch by batch while they are written:
the asset's metadata and its checks come from here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.schema import DROPOFF_COLUMN, PICKUP_COLUMN

PREVIEW_ROWS = 5


def _count_true(mask: pa.Array) -> int:
    return pc.sum(mask).as_py() or 0


@dataclass
class CleanResult:
    """What cleaning one file found: row and null counts, rows outside the month, the pickup range, a preview."""

    rows: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    pickups_outside_month: int = 0
    dropoffs_before_pickup: int = 0
    min_pickup: dt.datetime | None = None
    max_pickup: dt.datetime | None = None
    preview: pa.Table | None = None
    seconds: float = 0.0
    rows_rejected: int = 0  # quarantine: data lines set aside (the file has rows + rows_rejected)


class MonthStats:
    """Accumulates a CleanResult over the batches of one color's month."""

    def __init__(self, color: str, pinned: pa.Schema, month_start: dt.date, month_end: dt.date):
        self.pickup, self.dropoff = PICKUP_COLUMN[color], DROPOFF_COLUMN[color]
        timestamp = pinned.field(self.pickup).type
        self.start = pa.scalar(dt.datetime.combine(month_start, dt.time()), type=timestamp)
        self.end = pa.scalar(dt.datetime.combine(month_end, dt.time()), type=timestamp)
        self.result = CleanResult(null_counts=dict.fromkeys(pinned.names, 0))

    def add(self, batch: pa.RecordBatch) -> None:
        """Count one batch of cleaned rows into the result (and keep the first rows as the preview)."""
        result = self.result
        if result.preview is None:
            result.preview = pa.Table.from_batches([batch.slice(0, PREVIEW_ROWS)])
        result.rows += batch.num_rows
        for name in batch.schema.names:
            result.null_counts[name] += batch.column(name).null_count
        pickup, dropoff = batch.column(self.pickup), batch.column(self.dropoff)
        outside = pc.or_(pc.less(pickup, self.start), pc.greater_equal(pickup, self.end))
        result.pickups_outside_month += _count_true(outside)
        result.dropoffs_before_pickup += _count_true(pc.less(dropoff, pickup))
        bounds = pc.min_max(pickup)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None:
            result.min_pickup = low if result.min_pickup is None else min(result.min_pickup, low)
            result.max_pickup = high if result.max_pickup is None else max(result.max_pickup, high)
