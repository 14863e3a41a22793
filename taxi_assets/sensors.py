"""Refresh partitions when their upstream file appears or changes.

Each tick HEADs every partition's upstream file, concurrently on a small bounded pool, and compares
the server's fingerprint (ETag, Last-Modified, Content-Length) with the one the partition's latest
`raw_trips` materialization recorded (`source_fingerprint`). A partition with no materialization,
or whose file changed, gets a run request; its run key includes the fingerprint, so one version of
a file is requested once. The run history is the source of truth: turned on after a backfill, the
first tick requests only what is missing or changed. The cursor only remembers the fingerprints
already requested or loaded, so a quiet tick does not read the event log at all, and a tick with
changes reads the latest materialization of those partitions only.

The partitions checked are the grid's at the tick's moment (`upstream_keys`: the same definition
the assets have, evaluated now), without the cells before a color's first file: a month appears
as the calendar moves, with no reload of the code location.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import dagster as dg
import requests

from taxi_assets.jobs import trips_job
from taxi_assets.partitions import TripMonth, upstream_keys
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.run_history import TOKEN_TAG, TRIGGER_TAG, loaded_fingerprints, requested_tokens
from taxi_assets.upstream import Fingerprint, UpstreamError

# A tick must finish within Dagster's sensor evaluation timeout (60 s by default); files not
# checked in time are checked next tick.
TICK_BUDGET_SECONDS = 40


class TickLog:
    """A tick's `context.log`, opened only when something is logged. Dagster writes a file for
    every tick that opens it (`$DAGSTER_HOME/storage/<repository>/<sensor>/<tick>.err` with the
    local compute logs) and never removes it, even when the tick is purged: a sensor that logs on
    every tick adds a file per tick forever (the upkeep, every two minutes: 21,600 a month; seen
    in benchmarks/soak.py). Quiet ticks say what they did in their skip reason, which the tick
    keeps and retention removes."""

    def __init__(self, context: dg.SensorEvaluationContext):
        self._context = context

    def __getattr__(self, level: str):
        return getattr(self._context.log, level)


def _probe_all(files: UpstreamFiles, keys: list[str], log) -> tuple[dict[str, Fingerprint | None], int]:
    """Each key's upstream fingerprint (None: not published), and how many could not be checked."""
    local = threading.local()
    colors = files.source.colors
    sessions: list[requests.Session] = []

    def probe(key: str) -> Fingerprint | None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        return files.fingerprint(TripMonth.from_key(key, colors), session=local.session)

    found: dict[str, Fingerprint | None] = {}
    failed = 0
    pool = ThreadPoolExecutor(max_workers=files.max_concurrent_requests, thread_name_prefix="upstream-head")
    try:
        futures = {pool.submit(probe, key): key for key in keys}
        done, not_done = wait(futures, timeout=TICK_BUDGET_SECONDS)
        for future in done:
            key = futures[future]
            try:
                found[key] = future.result()
            except UpstreamError as exc:  # its message shows the URL without credentials
                failed += 1
                log.warning(f"{key}: could not check it: {exc}")
        if not_done:
            failed += len(not_done)
            log.warning(f"{len(not_done)} files not checked within {TICK_BUDGET_SECONDS} s; next tick checks them")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for session in sessions:
            session.close()
    return found, failed


@dg.sensor(
    job=trips_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Materializes a partition when its upstream file appears or changes.",
)
def upstream_files_sensor(context: dg.SensorEvaluationContext, upstream_files: UpstreamFiles) -> dg.SensorResult:
    """Request a run for each partition whose upstream file is new or changed since it was loaded."""
    started = time.monotonic()
    known: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    # The grid of the source the files are of, at this moment: what a run accepts now.
    keys = upstream_keys(upstream_files.source, dt.datetime.now(dt.timezone.utc))
    log = TickLog(context)
    upstream, failed = _probe_all(upstream_files, keys, log)
    published = {key: fp.token() for key, fp in upstream.items() if fp is not None}

    changed_since_cursor = [key for key, token in published.items() if known.get(key) != token]
    loaded = loaded_fingerprints(context.instance, changed_since_cursor)
    coming = requested_tokens(context.instance, changed_since_cursor)
    run_requests = []
    for key in sorted(changed_since_cursor):
        token = published[key]
        if key in loaded and loaded[key] == token:
            continue  # already in the lake: only the cursor did not know
        if token in coming.get(key, ()):
            continue  # a run the schedule requested is loading this very file
        trigger = "new" if key not in loaded else "changed"
        tags = {TRIGGER_TAG: trigger, TOKEN_TAG: token}
        run_requests.append(dg.RunRequest(run_key=f"{key}@{token}", partition_key=key, tags=tags))
    known.update(published)

    seconds = time.monotonic() - started
    summary = (
        f"checked {len(upstream)} of {len(keys)} upstream files in {seconds:.1f} s: {len(published)} published, "
        f"{len(run_requests)} new or changed" + (f", {failed} not checked" if failed else "")
    )
    if run_requests or failed:  # a quiet tick: its skip reason says it all (TickLog)
        log.info(summary)
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(known, sort_keys=True),
        skip_reason=None if run_requests else summary,
    )
