"""The upkeep of the `tlc` grid's history, by `grid_upkeep_sensor` (on from the first load, every two minutes;
launches no run):

1. Cells before a color's first file (green before 2014, fhv before 2015, fhvhv before 2019-02):
   the grid is a month x color rectangle, so it holds 181 of them. Each is recorded once as
   materialized (40 cells a tick), with no run, for every partitioned asset, saying why it holds nothing (0 rows,
   `no_file`: "no TLC file before 2014-01 for green"), so the UI never offers them as missing and
   a backfill of what is missing never includes them. A run of one (by hand) succeeds at once,
   holding nothing (`io_manager.NoFile`). `monthly_trip_stats` is recorded after `bq_rides_table`,
   so its automation condition (eager) sees it handled and requests nothing for them.
2. Dimension tags for materializations recorded when the `tlc` grid was a list of keys (before
   2026-12): they carry the key "yellow|2021-01-01" but not the per-dimension tags
   (`dagster/partition/color`, `dagster/partition/month`) that Dagster writes for a
   multi-partition key. Dagster's asset status reads such history in two ways: through the status
   cache (every current SQLite and PostgreSQL storage), rebuilt from the partition column when the
   partitions definition changes, so they count as loaded; and, for a storage whose schema has no
   cache, from those tags only, where they would show as missing. The sensor adds the two tags to
   the tag index of each materialization that lacks them (the event itself is left as it was).
   Its cursor holds the last record seen per asset: a later tick reads only new records, which
   Dagster tags itself.
"""

from __future__ import annotations

import json

import dagster as dg

from taxi_assets.dagster_internals import GRID_TAGS, changed, tag_index_writer, tagged_entry
from taxi_assets.io_manager import NoFile
from taxi_assets.partitions import TripMonth, trip_partitions, upstream_keys
from taxi_assets.sensors import TickLog
from taxi_assets.sources import ALL_COLORS, TLC

COLOR_TAG = "dagster/partition/color"
MONTH_TAG = "dagster/partition/month"
# The partitioned assets of the graph, in the data's direction (the trip chain, then the statistics).
PARTITIONED = tuple(
    dg.AssetKey(name) for name in ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table", "monthly_trip_stats")
)
# Records read per query, and per tick: a history of 10,000 partition loads (x5 assets) is caught
# up in a few ticks, each well inside the 60 s sensor timeout.
PAGE = 1000
TICK_RECORDS = 10_000
# Cells recorded per tick (x5 assets): few enough that a tick stays well inside the 60 s sensor
# timeout on a loaded SQLite instance; the empty cells are recorded over a few ticks.
TICK_CELLS = 40


def dimension_tags(key: str) -> dict[str, str]:
    """The month and color tags of partition `key`, as materializations on the month x color grid carry them."""
    month = TripMonth.from_key(key, ALL_COLORS)
    return {COLOR_TAG: month.color, MONTH_TAG: month.month.isoformat()}


def record_empty_cells(instance: dg.DagsterInstance, budget: int = TICK_CELLS) -> tuple[int, int]:
    """Record up to `budget` cells of the tlc grid before their color's first file as materialized,
    holding nothing, for each partitioned asset that has no materialization of them. Returns how
    many cells were recorded and how many remain."""
    empty = sorted(set(trip_partitions(TLC).get_partition_keys()) - set(upstream_keys(TLC)))
    done = {asset_key: instance.get_materialized_partitions(asset_key) for asset_key in PARTITIONED}
    todo = [key for key in empty if any(key not in done[asset_key] for asset_key in PARTITIONED)]
    for key in todo[:budget]:
        reason = TripMonth.from_key(key, TLC.colors).no_file_reason(TLC)
        for asset_key in PARTITIONED:  # in the data's direction: the statistics after their slice
            if key not in done[asset_key]:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(
                        asset_key=asset_key, partition=key, metadata=NoFile(reason).metadata, tags=dimension_tags(key)
                    )
                )
    return min(len(todo), budget), max(len(todo) - budget, 0)


def tag_dimensions(
    instance: dg.DagsterInstance, after: dict[str, int], budget: int = TICK_RECORDS
) -> tuple[dict[str, int], int, bool]:
    """Index the dimension tags of each untagged materialization of the partitioned assets, after
    the storage id `after` names per asset. Returns the new cursor, how many were tagged, and
    whether records remain (the budget ran out)."""
    cursor = dict(after)
    # Dagster internals (GRID_TAGS in taxi_assets/dagster_internals.py): without them, one warning and
    # nothing done; the UI reads such history through the asset status cache all the same.
    store = tag_index_writer(instance.event_log_storage)
    if store is None:
        return cursor, 0, False
    tagged = read = 0
    for key in PARTITIONED:
        name = key.to_user_string()
        while read < budget:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor.get(name, 0)), limit=PAGE, ascending=True
            )
            entries, ids = [], []
            for record in page.records:
                read += 1
                materialization = record.asset_materialization
                if materialization is None or materialization.partition is None:
                    continue
                if COLOR_TAG in (materialization.tags or {}):
                    continue  # recorded under the month x color grid: Dagster tagged it
                try:
                    tags = dimension_tags(materialization.partition)
                except ValueError:
                    continue  # not a month x color key
                entries.append((record.event_log_entry, tags))
                ids.append(record.storage_id)
            if entries:
                try:
                    store([tagged_entry(entry, tags) for entry, tags in entries], ids)
                except (AttributeError, TypeError) as exc:  # Dagster's internals moved: say so, change nothing
                    changed(GRID_TAGS, f"{name}'s history not tagged: {exc}")
                    return cursor, tagged, False
                tagged += len(entries)
            if page.records:
                cursor[name] = page.records[-1].storage_id
            if not page.has_more:
                break
        else:
            return cursor, tagged, True
    return cursor, tagged, False


@dg.sensor(
    # Two minutes: a fresh deployment's empty cells are recorded within its first ten minutes;
    # once caught up, a tick reads the few records made since the last one, per asset.
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records the cells before a color's first file as holding nothing, once, and adds the month and "
    "color tags to materializations recorded before the grid was month x color (launches no run).",
)
def grid_upkeep_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Record the tlc grid's empty cells, then tag old materializations with their month and color."""
    state = json.loads(context.cursor) if context.cursor else {}
    recorded, remaining = (0, 0) if state.get("empty_cells_recorded") else record_empty_cells(context.instance)
    log = TickLog(context)
    tagged_after, tagged, more = tag_dimensions(context.instance, state.get("tagged_after", {}))
    summary = (
        f"{recorded} cells before a color's first file recorded as empty ({remaining} to go); "
        f"{tagged} materializations given month and color tags" + ("; more next tick" if more else "")
    )
    if recorded or tagged:  # once caught up, every two minutes: the skip reason says it (TickLog)
        log.info(summary)
    cursor = {"empty_cells_recorded": remaining == 0, "tagged_after": tagged_after}
    return dg.SensorResult(cursor=json.dumps(cursor, sort_keys=True), skip_reason=summary)
