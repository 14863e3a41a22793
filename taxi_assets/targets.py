"""Resources per target: `resources_for(target, source)` is the one place that tells local from gcp,
and the one place that builds the `UpstreamFiles` resource, from the `Source` the assets are built for.

The wiring of the code location, beside `definitions.py`: it is the one module that puts the IO
manager and the resources together, so imports run one way (definitions -> targets -> io_manager,
resources). The local target's DuckDB file is read here, once, when the code location loads, and
handed to the warehouse, so the UI shows it; URLs and credentials resolve when a run starts (`settings.py`, and
`EnvVar` for GCP's required settings).
"""

from __future__ import annotations

import dagster as dg

from taxi_assets import settings
from taxi_assets.io_manager import LakeIOManager
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.local.lake import LocalLake
from taxi_assets.resources.local.warehouse import DuckDBWarehouse
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.settings import TARGETS
from taxi_assets.sources import Source

# Each lake is built `configure_at_launch`: the IO manager holds the lake as a nested resource, and
# Dagster 1.13 gives a nested resource built whole the values it was built with, so a run's config
# for `lake` (its bounds, say) would reach `raw_trips` but not the IO manager that stores the files.
# Partly configured, the one `lake` key is configured once per run, for both.


def _local() -> tuple[Lake, Warehouse]:
    return LocalLake.configure_at_launch(), DuckDBWarehouse(database=str(settings.duckdb_path()))


def _gcp() -> tuple[Lake, Warehouse]:
    # Imported here: the Google libraries are slow to import and the local target never needs them.
    from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource
    from taxi_assets.resources.gcp.lake import GCSLake
    from taxi_assets.resources.gcp.warehouse import BigQueryWarehouse

    project = dg.EnvVar("GCP_PROJECT")
    gcs = TaxiGCSResource(project=project)
    lake = GCSLake.configure_at_launch(gcs=gcs, bucket=dg.EnvVar("GCS_BUCKET"))
    warehouse = BigQueryWarehouse(
        bigquery=TaxiBigQueryResource(project=project), gcs=gcs, dataset=dg.EnvVar("BQ_DATASET")
    )
    return lake, warehouse


def resources_for(target: str, source: Source, **upstream_settings: object) -> dict[str, object]:
    """The resources of `target`'s code location serving `source`, by resource key; `upstream_settings`
    (e.g. a mirror's `base_url`) configure `UpstreamFiles`."""
    if target not in TARGETS:
        raise ValueError(f"TAXI_TARGET must be one of {TARGETS}, got {target!r}")
    lake, warehouse = _local() if target == "local" else _gcp()
    return {
        "upstream_files": UpstreamFiles.of(source, **upstream_settings),
        "workdir": WorkDir(),
        # The IO manager stores and loads; an asset that asks what is stored (raw_trips) asks the lake.
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        # Every warehouse table (rides, zones, monthly_trip_stats) is written by the warehouse itself.
        "warehouse": warehouse,
    }
