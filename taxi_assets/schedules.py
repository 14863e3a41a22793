"""The TLC source's monthly schedule: the newest month of each color, once it should be out.

The TLC publishes a month about eight weeks after it ends, all colors on the same day (2024-01 came
out on 2024-03-21). On the 25th, the month before last is asked for; a color whose file is not out
yet (403 or 404) is skipped, and a tick with none out is skipped, not failed. The sensor catches
what a late publication or a re-publication brings later. The month asked for is in the grid at
the tick's moment (the grid ends at the month before last: `partitions.TLC_END_OFFSET`), whenever
the code location was loaded.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from taxi_assets.jobs import trips_job
from taxi_assets.partitions import TripMonth, upstream_keys
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.run_history import TOKEN_TAG, TRIGGER_TAG, loaded_fingerprints, requested_tokens
from taxi_assets.upstream import UpstreamError


def month_before_last(day: dt.date) -> dt.date:
    """The first day of the month two months before `day`'s (on 2026-11-25: 2026-09-01)."""
    previous = day.replace(day=1) - dt.timedelta(days=1)
    return (previous.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


@dg.schedule(
    job=trips_job,
    cron_schedule="0 6 25 * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="On the 25th: the month before last, for each color whose file is out.",
)
def newest_month_schedule(context: dg.ScheduleEvaluationContext, upstream_files: UpstreamFiles):
    """Request the month before last for each color whose file is out and not loaded yet."""
    month = month_before_last(context.scheduled_execution_time.date())
    # The grid of the source the files are of, at the tick's moment, cells with a file only.
    source = upstream_files.source
    keys = set(upstream_keys(source, context.scheduled_execution_time))
    trips = [trip for trip in (TripMonth(color, month) for color in source.colors) if trip.key in keys]
    loaded = loaded_fingerprints(context.instance, [trip.key for trip in trips])  # the sensor may have loaded some
    coming = requested_tokens(context.instance, [trip.key for trip in trips])  # or be loading them
    run_requests, not_out = [], []
    for trip in trips:
        try:
            fingerprint = upstream_files.fingerprint(trip)
        except UpstreamError as exc:  # its message shows the URL without credentials
            context.log.warning(f"{trip}: could not check upstream: {exc}")
            fingerprint = None
        if fingerprint is None:
            not_out.append(trip.color)
            continue
        token = fingerprint.token()
        if loaded.get(trip.key) == token or token in coming.get(trip.key, ()):
            continue
        tags = {TRIGGER_TAG: "schedule", TOKEN_TAG: token}
        run_requests.append(dg.RunRequest(run_key=f"{trip.key}@{token}", partition_key=trip.key, tags=tags))
    if not run_requests:
        if not not_out:
            return dg.SkipReason(f"{month:%Y-%m} is loaded, or being loaded, for every color")
        return dg.SkipReason(f"{month:%Y-%m} is not out yet ({', '.join(not_out)}); the sensor will notice it")
    if not_out:
        context.log.info(f"{month:%Y-%m} not out yet for {', '.join(not_out)}")
    return run_requests
