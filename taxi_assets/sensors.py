"""Refresh partitions when their upstream file appears or changes.

Each tick HEADs a slice of the partition grid (newest months first), compares the server's
fingerprint (ETag, Last-Modified, Content-Length) with the one remembered in the cursor, and
requests a run for each partition whose file is new or different. The run key includes the
fingerprint, so one version of a file is loaded once.
"""

import json
import time

import dagster as dg
import requests

from taxi_assets.jobs import trips_job
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.source import TripSource

KEYS_PER_TICK = 30
# A sensor tick must finish within Dagster's evaluation timeout (60 s by default): stop early and
# resume from there next tick when upstream is slow.
TICK_BUDGET_SECONDS = 40


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
    checked = 0
    started = time.monotonic()
    session = requests.Session()
    for key in batch:
        if time.monotonic() - started > TICK_BUDGET_SECONDS:
            break
        checked += 1
        month = TripMonth.from_key(key)
        try:
            fingerprint = source.fingerprint(month, session=session)
        except requests.RequestException as exc:
            context.log.warning(f"{key}: could not check {source.url_for(month)}: {exc}")
            continue
        if fingerprint is None:
            continue  # not published (yet)
        token = fingerprint.token()
        if seen.get(key) != token:
            seen[key] = token
            requests_out.append(dg.RunRequest(run_key=f"{key}@{token}", partition_key=month.as_multi_partition_key()))
    context.update_cursor(json.dumps({"fingerprints": seen, "next": start + checked}))
    if not requests_out:
        return dg.SkipReason(f"checked {checked} partition files; none new or changed")
    return requests_out
