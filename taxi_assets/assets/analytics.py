"""What the data is for: the zone lookup, monthly statistics per pickup borough, and a chart.

Small tables, so they travel as pandas DataFrames and are stored by Dagster's own pandas IO
managers (`warehouse_io_manager`: DuckDB locally, BigQuery on gcp) as warehouse tables beside
`rides`. The heavy part, the statistics over a month of rides, is SQL run by the warehouse: one row
per borough comes back to the worker.
"""

import base64
import io

import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.assets.bq_rides_table import bq_rides_table
from taxi_assets.assets.common import LAKE_IO, WAREHOUSE_KIND, markdown_table
from taxi_assets.io_manager import NewFile
from taxi_assets.partitions import TripMonth, trip_partitions
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.source import TripSource
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.schema import STATS_TABLE, ZONES_TABLE
from taxi_assets.sources import SOURCE
from taxi_assets.upstream import UpstreamError

ANALYTICS = "analytics"
WAREHOUSE_IO = "warehouse_io_manager"
ZONE_COUNT = 265
ZONES_COMPLETE = "has_265_zones_with_unique_ids"
TRIPS_ADD_UP = "trips_add_up_to_the_slice"
LOCATION_IDS_HAVE_ZONES = "location_ids_have_zones"
ZONES_KEY = dg.AssetKey(["taxi", ZONES_TABLE])
# How the stock IO managers find a partition's rows: by month and color on the releases' month x
# color grid; on the tlc source's list of keys ("yellow|2021-01-01"), by that key rebuilt in SQL.
STATS_PARTITION_EXPR = (
    {"month": "month", "color": "color"}
    if SOURCE.name == "releases"
    else {
        "duckdb": "color || '|' || strftime(month, '%Y-%m-%d')",
        "bigquery": "CONCAT(color, '|', FORMAT_TIMESTAMP('%Y-%m-%d', month))",
    }[WAREHOUSE_KIND]
)  # the stock IO managers name the table after the key's last part


@dg.asset(
    key=ZONES_KEY,
    group_name=ANALYTICS,
    kinds={"pandas", WAREHOUSE_KIND},
    io_manager_key=WAREHOUSE_IO,
    automation_condition=dg.AutomationCondition.on_missing(),
    check_specs=[
        dg.AssetCheckSpec(ZONES_COMPLETE, asset=ZONES_KEY, blocking=True, description="265 rows, unique LocationID")
    ],
)
def taxi_zones(context: dg.AssetExecutionContext, source: TripSource):
    """The taxi zone lookup (`{TAXI_SOURCE_URL}/misc/taxi_zone_lookup.csv`): LocationID, Borough,
    Zone, service_zone for the 265 zones, as the warehouse table `zones`. "N/A" and "NA" are real
    values in it (zone 265's service zone, zone 264's name), read as text, not as NULL."""
    try:
        url, data = source.zone_lookup()
    except UpstreamError as exc:
        raise dg.Failure(description=f"taxi zones: {exc}", allow_retries=False) from exc
    zones = pd.read_csv(
        io.BytesIO(data),
        keep_default_na=False,
        na_values=[""],
        dtype={"LocationID": "int64", "Borough": "string", "Zone": "string", "service_zone": "string"},
    )
    unique = zones["LocationID"].is_unique
    return dg.MaterializeResult(
        value=zones,
        metadata={"dagster/row_count": len(zones), "source_url": dg.MetadataValue.url(url)},
        check_results=[
            dg.AssetCheckResult(
                check_name=ZONES_COMPLETE,
                passed=len(zones) == ZONE_COUNT and unique,
                metadata={"rows": len(zones), "unique_location_ids": bool(unique)},
            )
        ],
    )


@dg.asset(
    partitions_def=trip_partitions,
    group_name=ANALYTICS,
    kinds={"pandas", "sql", WAREHOUSE_KIND},
    io_manager_key=WAREHOUSE_IO,
    deps=[bq_rides_table, ZONES_KEY],
    metadata={"partition_expr": STATS_PARTITION_EXPR},
    # Every partition whose slice was reloaded, not only the newest month (dagster #24474).
    automation_condition=dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window()),
    check_specs=[
        dg.AssetCheckSpec(
            TRIPS_ADD_UP,
            asset=STATS_TABLE,
            blocking=True,
            description="Trips across boroughs add up to the slice's rows in `rides`",
        ),
        dg.AssetCheckSpec(
            LOCATION_IDS_HAVE_ZONES,
            asset=STATS_TABLE,
            description="The slice of `rides`: the share of its pickup and dropoff location ids that the zone "
            "lookup does not know (trips counted under 'Unknown'); NULL ids are counted apart",
        ),
    ],
)
def monthly_trip_stats(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """Per pickup borough, for the month x color slice of `rides`: trips, passengers, total and
    median fare, mean distance, the tip share of card fares (tips / fares where payment_type = 1),
    and trips whose pickup falls outside the month. Computed by the warehouse in SQL over the
    slice; the table `monthly_trip_stats` gets exactly this partition's rows replaced on rerun."""
    month = TripMonth.from_context(context)
    with failing_fast(month):
        stats = warehouse.monthly_stats(month.color, month.month)
        stats["passengers"] = stats["passengers"].astype("Int64")  # a count; NULL where a color has none
        slice_rows = warehouse.slice_rows(month.color, month.month)
        coverage = warehouse.zone_coverage(month.color, month.month)
    counted = int(stats["trips"].sum()) if len(stats) else 0
    return dg.MaterializeResult(
        value=stats,
        metadata={
            "boroughs": len(stats),
            "trips": counted,
            "preview": dg.MetadataValue.md(markdown_table(pa.Table.from_pandas(stats, preserve_index=False))),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=TRIPS_ADD_UP,
                passed=counted == slice_rows,
                metadata={"trips_in_stats": counted, "rows_in_slice": slice_rows},
            ),
            dg.AssetCheckResult(
                check_name=LOCATION_IDS_HAVE_ZONES,
                passed=coverage.unknown == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "location_ids": coverage.ids,
                    "ids_without_zone": coverage.unknown,
                    "share_without_zone": round(coverage.unknown_share, 6),
                    "null_location_ids": coverage.missing,
                },
            ),
        ],
    )


# One distinct line per taxi color.
COLOR_OF = {"yellow": "#e0a800", "green": "#2ca02c", "fhv": "#6f42c1", "fhvhv": "#d62728"}


def _chart_png(trips: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5), dpi=100)
    for color, rows in trips.groupby("color"):
        rows = rows.sort_values("month")
        axes.plot(rows["month"], rows["trips"], marker="o", linewidth=2, color=COLOR_OF.get(color), label=color)
    axes.set_title("NYC TLC trips per month")
    axes.set_ylabel("trips")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


@dg.asset(
    group_name=ANALYTICS,
    kinds={"matplotlib", "png"},
    io_manager_key=LAKE_IO,
    metadata={"lake/path": "reports/trips_per_month.png"},
    deps=[STATS_TABLE],
    automation_condition=dg.AutomationCondition.eager(),
)
def trips_per_month_chart(context: dg.AssetExecutionContext, warehouse: Warehouse, workdir: WorkDir):
    """A line chart of trips per month for each color, over every month loaded in
    `monthly_trip_stats` (summed by the warehouse), as a PNG in the lake
    (`reports/trips_per_month.png`), shown here with its figures."""
    with failing_fast("trips_per_month_chart"):
        trips = warehouse.trips_per_month()
    png = _chart_png(trips)
    path = workdir.path("trips_per_month.png")
    with failing_fast("trips_per_month_chart"), writing(path):
        path.write_bytes(png)
    table = trips.pivot_table(index="month", columns="color", values="trips", aggfunc="sum").reset_index()
    table["month"] = pd.to_datetime(table["month"]).dt.strftime("%Y-%m")
    image = base64.b64encode(png).decode()
    return dg.MaterializeResult(
        value=NewFile(path),
        metadata={
            "chart": dg.MetadataValue.md(f"![trips per month](data:image/png;base64,{image})"),
            "trips_per_month": dg.MetadataValue.md(markdown_table(pa.Table.from_pandas(table, preserve_index=False))),
            "months": int(trips["month"].nunique()),
        },
    )
