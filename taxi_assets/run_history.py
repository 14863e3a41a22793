"""What the run history says about the trip partitions, for the sensor and the schedule alike:
the tag that says what triggered a run, the upstream fingerprint each partition was loaded from,
and those that unfinished runs were requested for.

A tick asks only about the partitions in question, and only for each one's latest `raw_trips`
materialization (two indexed queries), so its cost follows the grid, not the history's length.
"""

from __future__ import annotations

from collections.abc import Collection

import dagster as dg

from taxi_assets.assets.raw_trips import FINGERPRINT, RAW_TRIPS

TRIGGER_TAG = "taxi/trigger"  # new, changed (the sensor) or schedule
# The upstream fingerprint a sensor's or the schedule's run was requested for. Each instigator
# dedups its own run keys only: without it, a month published in the hour before the schedule's
# tick was requested by both and loaded twice (replaced, not duplicated, but downloaded twice).
TOKEN_TAG = "taxi/upstream_token"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
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


def requested_tokens(instance: dg.DagsterInstance, keys: Collection[str]) -> dict[str, set[str]]:
    """Partition key -> the upstream fingerprints that unfinished runs were requested for (by the
    sensor or the schedule), for those of `keys` that have one. Reads only unfinished runs."""
    wanted = set(keys)
    if not wanted:
        return {}
    found: dict[str, set[str]] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        key, token = run.tags.get("dagster/partition"), run.tags.get(TOKEN_TAG)
        if key in wanted and token:
            found.setdefault(key, set()).add(token)
    return found
