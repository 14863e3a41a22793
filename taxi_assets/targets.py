"""Resources per target: `resources_for(target, source)` is the one place that tells local from gcp.

The wiring of the code location, beside `definitions.py`: it is the one module that puts the IO
manager and the resources together, so imports run one way (definitions -> targets -> io_manager,
resources). The local target's DuckDB file is read here, once, when the code location loads, and
handed to both its users (our warehouse and Dagster's DuckDB IO manager), so the UI shows it and
the two cannot disagree; URLs and credentials resolve when a run starts (`settings.py`, and
`EnvVar` for GCP's required settings).
"""

from __future__ import annotations

import dagster as dg

from taxi_assets import settings
from taxi_assets.io_manager import LakeIOManager
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.local.lake import LocalLake
from taxi_assets.resources.local.warehouse import DUCKDB_SETTINGS, DuckDBWarehouse
from taxi_assets.resources.source import TripSource
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.settings import TARGETS


def _local() -> tuple[Lake, Warehouse, dg.IOManagerDefinition]:
    from dagster_duckdb_pandas import DuckDBPandasIOManager

    database = str(settings.duckdb_path())
    tables = DuckDBPandasIOManager(database=database, schema="main", connection_config=DUCKDB_SETTINGS)
    return LocalLake(), DuckDBWarehouse(database=database), tables


def _gcp() -> tuple[Lake, Warehouse, dg.IOManagerDefinition]:
    # Imported here: the Google libraries are slow to import and the local target never needs them.
    from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource
    from taxi_assets.resources.gcp.lake import GCSLake
    from taxi_assets.resources.gcp.pandas_io import TaxiBigQueryPandasIOManager
    from taxi_assets.resources.gcp.warehouse import BigQueryWarehouse

    project = dg.EnvVar("GCP_PROJECT")
    gcs = TaxiGCSResource(project=project)
    lake = GCSLake(gcs=gcs, bucket=dg.EnvVar("GCS_BUCKET"))
    dataset = dg.EnvVar("BQ_DATASET")
    warehouse = BigQueryWarehouse(bigquery=TaxiBigQueryResource(project=project), gcs=gcs, dataset=dataset)
    tables = TaxiBigQueryPandasIOManager(project=project, dataset=dataset)
    return lake, warehouse, tables


def resources_for(target: str, source: str) -> dict[str, object]:
    if target not in TARGETS:
        raise ValueError(f"TAXI_TARGET must be one of {TARGETS}, got {target!r}")
    lake, warehouse, tables = _local() if target == "local" else _gcp()
    return {
        "source": TripSource(source=source),
        "workdir": WorkDir(),
        # The IO manager stores and loads; an asset that asks what is stored (raw_trips) asks the lake.
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "warehouse": warehouse,
        "warehouse_io_manager": tables,
    }
