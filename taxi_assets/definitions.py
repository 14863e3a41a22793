"""The code location: assets, checks, jobs and sensors, with resources picked by TAXI_TARGET."""

import dagster as dg

from taxi_assets import settings
from taxi_assets.assets import ALL_ASSETS
from taxi_assets.assets.analytics import analytics_automation
from taxi_assets.jobs import trips_job
from taxi_assets.schedules import newest_month_schedule
from taxi_assets.sensors import upstream_files_sensor
from taxi_assets.sources import SOURCE
from taxi_assets.targets import resources_for


def build_defs(target: str, **resource_overrides: object) -> dg.Definitions:
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[trips_job],
        sensors=[upstream_files_sensor, analytics_automation],
        # The releases never change; the TLC publishes a month every month.
        schedules=[newest_month_schedule] if SOURCE.name == "tlc" else [],
        resources={**resources_for(target), **resource_overrides},
        # A partition's four steps are a chain: separate processes per step would buy no
        # parallelism and cost seconds each. Partitions run side by side as separate runs.
        executor=dg.in_process_executor,
    )


defs = build_defs(settings.target())
