"""What the run history says about the trip partitions, for the sensor and the schedule alike:
the tag that says what triggered a run, and the upstream fingerprint each partition was loaded from.

A tick asks only about the partitions in question, and only for each one's latest `raw_trips`
materialization (two indexed queries), so its cost follows the grid, not the history's length.
"""

from __future__ import annotations

from collections.abc import Collection

import dagster as dg

from taxi_assets.assets.raw_trips import FINGERPRINT, RAW_TRIPS

TRIGGER_TAG = "taxi/trigger"  # new, changed (the sensor) or schedule
# Records asked for at once by storage id: well under the SQL parameter limits of SQLite (32766)
# and PostgreSQL (65535), and a few pages for the whole TLC grid.
PAGE = 500


def loaded_fingerprints(instance: dg.DagsterInstance, keys: Collection[str]) -> dict[str, str | None]:
    """Partition key -> the upstream fingerprint its latest raw_trips materialization recorded, for
    those of `keys` that have one (None: recorded without a fingerprint, as an empty cell is)."""
    if not keys:
        return {}
    latest = instance.get_latest_storage_id_by_partition(
        RAW_TRIPS, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    storage_ids = sorted(latest.values())
    found: dict[str, str | None] = {}
    for start in range(0, len(storage_ids), PAGE):
        page = storage_ids[start : start + PAGE]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_TRIPS, storage_ids=page), limit=len(page)
        ).records
        for record in records:
            materialization = record.asset_materialization
            value = materialization.metadata.get(FINGERPRINT)
            found[materialization.partition] = value.value if value is not None else None
    return found
