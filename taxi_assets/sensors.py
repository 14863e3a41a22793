"""Refresh partitions when their upstream file appears or changes.

Each tick HEADs a slice of the partition grid (newest months first), compares the server's
fingerprint (ETag, Last-Modified, Content-Length) with the one remembered in the cursor, and
requests a run for each partition whose file is new or different. The run key includes the
fingerprint, so one version of a file is loaded once.
"""

import json

import dagster as dg
import requests

from taxi_assets.jobs import trips_job
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.source import TripSource

KEYS_PER_TICK = 30


def _keys_newest_first(context: dg.SensorEvaluationContext) -> list[str]:
    keys = trip_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    return sorted(keys, key=lambda k: (TripMonth.from_key(k).month, k), reverse=True)


@dg.sensor(
    job=trips_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Materializes a partition when its upstream release file appears or changes.",
)
def upstream_files_sensor(context: dg.SensorEvaluationContext, source: TripSource):
    state = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = state.get("fingerprints", {})
    keys = _keys_newest_first(context)
    start = state.get("next", 0) % max(len(keys), 1)
    batch = (keys[start:] + keys[:start])[:KEYS_PER_TICK]

    requests_out = []
    for key in batch:
        month = TripMonth.from_key(key)
        try:
            fingerprint = source.fingerprint(month)
        except requests.RequestException as exc:
            context.log.warning(f"{key}: could not check {source.url_for(month)}: {exc}")
            continue
        if fingerprint is None:
            continue  # not published (yet)
        token = fingerprint.token()
        if seen.get(key) != token:
            seen[key] = token
            requests_out.append(dg.RunRequest(run_key=f"{key}@{token}", partition_key=month.as_multi_partition_key()))
    context.update_cursor(json.dumps({"fingerprints": seen, "next": start + len(batch)}))
    if not requests_out:
        return dg.SkipReason(f"checked {len(batch)} partition files; none new or changed")
    return requests_out
