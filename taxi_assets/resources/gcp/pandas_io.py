"""Dagster's BigQueryPandasIOManager for the analytics tables (zones, monthly_trip_stats)."""

from __future__ import annotations

import contextlib
import os

from dagster_gcp.bigquery.utils import setup_gcp_creds
from dagster_gcp_pandas import BigQueryPandasIOManager

from taxi_assets import settings


class TaxiBigQueryPandasIOManager(BigQueryPandasIOManager):
    """The stock IO manager, taking `GCP_CREDENTIALS` when a run starts like the other gcp
    resources (the stock one takes it only as config). Without it: Application Default
    Credentials. Against an emulator (`BIGQUERY_EMULATOR_HOST`, which the Google client follows)
    it needs credentials that resolve; the tests give it a key and a loopback token endpoint."""

    @contextlib.contextmanager
    def yield_for_execution(self, context):
        key = self.gcp_credentials or settings.gcp_credentials()
        if key and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            with setup_gcp_creds(key):
                yield self.create_io_manager(context)
        else:
            yield self.create_io_manager(context)
