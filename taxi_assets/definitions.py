"""The code location: assets, checks, jobs and sensors, for the source TAXI_SOURCE picks, with
resources picked by TAXI_TARGET. `build_defs` reads neither: one process can build both sources."""

import dagster as dg

from taxi_assets import settings
from taxi_assets.assets import build_assets
from taxi_assets.assets.analytics import analytics_automation
from taxi_assets.compute_logs import checked_in_process_executor
from taxi_assets.dagster_internals import sleep_while_waiting_for_pool_slots
from taxi_assets.grid_upkeep import grid_upkeep_sensor
from taxi_assets.jobs import trips_job
from taxi_assets.retention import retention_definitions
from taxi_assets.schedules import newest_month_schedule
from taxi_assets.sensors import upstream_files_sensor
from taxi_assets.sources import Source, source_named
from taxi_assets.targets import resources_for


def build_defs(target: str, source: Source, /, **upstream_settings: object) -> dg.Definitions:
    """The code location for `target` (local or gcp) serving `source`: its assets, checks, jobs,
    sensors, schedules and resources, all built from this one `Source` (the `UpstreamFiles` resource
    too, with `upstream_settings` such as a mirror's `base_url`)."""
    trips = dg.Definitions(
        assets=build_assets(source, target).all,
        jobs=[trips_job],
        # The tlc grid's cells before a color's first file, and history from when it was a list of keys.
        sensors=[upstream_files_sensor, analytics_automation] + ([grid_upkeep_sensor] if source.name == "tlc" else []),
        # The releases never change; the TLC publishes a month every month.
        schedules=[newest_month_schedule] if source.name == "tlc" else [],
        resources=resources_for(target, source, **upstream_settings),
        # A partition's four steps are a chain: separate processes per step would buy no
        # parallelism and cost seconds each. Partitions run side by side as separate runs. A run
        # first checks the room for its compute logs (taxi_assets/compute_logs.py).
        executor=checked_in_process_executor,
    )
    # Housekeeping: old runs, compute logs and ticks removed daily (taxi_assets/retention.py).
    housekeeping = retention_definitions(trips.resolve_asset_graph().asset_check_keys, settings.retention_cron())
    return dg.Definitions.merge(trips, housekeeping)


# Steps that wait for a pool slot sleep instead of spinning (a Dagster bug: POOL_WAIT in
# taxi_assets/dagster_internals.py). Applied here because importing the code location is the only
# hook in every process that runs steps: a run's own process, `dagster dev` / `dg dev` and
# `dagster asset materialize`, the code server, and a Celery worker (which imports this module
# before its pool forks, deploy/worker.py).
sleep_while_waiting_for_pool_slots()
# TAXI_TARGET and TAXI_SOURCE are read here, once, when the code location loads.
defs = build_defs(settings.target(), source_named(settings.source()))
