"""What the run history says about the trip partitions, for the sensor and the schedule alike:
the tag that says what triggered a run, and the upstream fingerprint each partition was loaded from."""

from __future__ import annotations

import dagster as dg

from taxi_assets.assets.raw_trips import FINGERPRINT, RAW_TRIPS

TRIGGER_TAG = "taxi/trigger"  # new, changed (the sensor) or schedule


def loaded_fingerprints(instance: dg.DagsterInstance) -> dict[str, str | None]:
    """Partition key -> the upstream fingerprint its latest raw_trips materialization recorded."""
    found: dict[str, str | None] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_TRIPS), limit=1000, cursor=cursor, ascending=False
        )
        for record in page.records:
            materialization = record.asset_materialization
            if materialization.partition not in found:  # newest first: the first one seen is the latest
                value = materialization.metadata.get(FINGERPRINT)
                found[materialization.partition] = value.value if value is not None else None
        if not page.has_more:
            return found
        cursor = page.cursor
