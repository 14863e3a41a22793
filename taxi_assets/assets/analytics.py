"""What the data is for: the zone lookup, monthly statistics per pickup borough, and a chart.

Small tables beside `rides`, written by the warehouse itself: the zones replaced in one step, the
statistics computed and stored in SQL in one transaction per partition (one row per borough comes
back to the worker, for the metadata).
"""

import base64
import io
from textwrap import shorten

import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets import settings
from taxi_assets.assets.analytics_sql import (
    MONTHLY_STATS,
    STATS_COLUMNS,
    STATS_OF_PARTITION,
    STATS_PARTITION,
    TRIPS_PER_MONTH,
    ZONE_COVERAGE,
)
from taxi_assets.assets.common import (
    LAKE_IO,
    STORAGE_RETRY,
    WAREHOUSE_KIND,
    column_schema,
    markdown_table,
    per_partition,
    shown_table_name,
)
from taxi_assets.io_manager import NewFile
from taxi_assets.mirror import PUBLIC_BASE_URL, recorded_source
from taxi_assets.partitions import TripMonth
from taxi_assets.progress import Progress
from taxi_assets.resources.errors import failing_fast, writing
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.resources.warehouse import Warehouse
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.schema import RIDES_TABLE, STATS_TABLE, ZONES_TABLE
from taxi_assets.sources import Source
from taxi_assets.upstream import UpstreamError, redact, zone_lookup_url

ANALYTICS = "analytics"
ZONE_COUNT = 265
ZONES_COMPLETE = "has_265_zones_with_unique_ids"
TRIPS_ADD_UP = "trips_add_up_to_the_slice"
LOCATION_IDS_HAVE_ZONES = "location_ids_have_zones"
ZONES_KEY = dg.AssetKey(["taxi", ZONES_TABLE])
AUTOMATION_SENSOR = "analytics_automation"


# Requested whenever the table is missing, the first evaluation included (`on_missing()` skips
# what was already missing when it was first evaluated: on a fresh instance, everything), unless a
# run is loading it now or the last attempt failed (a broken lookup is not retried every tick:
# materialize it by hand once it is fixed).
ZONES_WHEN_MISSING = (
    dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.execution_failed()
).with_label("missing, not in progress, last attempt not failed")


ZONE_COLUMNS = ("LocationID", "Borough", "Zone", "service_zone")


def _read_zones(url: str, data: bytes) -> pd.DataFrame:
    """The lookup as a table, or a Failure naming the file and what is wrong with it: nothing is
    stored unless the whole lookup is right."""

    def bad(reason: str) -> dg.Failure:
        return dg.Failure(
            description=f"taxi zones: {redact(url)}: {reason}; the zones table is unchanged", allow_retries=False
        )

    try:
        zones = pd.read_csv(
            io.BytesIO(data),
            keep_default_na=False,
            na_values=[""],
            dtype={"LocationID": "int64", "Borough": "string", "Zone": "string", "service_zone": "string"},
        )
    except (ValueError, pd.errors.ParserError) as exc:  # a value that is not an id, a ragged line
        raise bad(f"not a zone lookup CSV ({shorten(str(exc), 200)})") from None
    if tuple(zones.columns) != ZONE_COLUMNS:
        raise bad(f"columns {shorten(', '.join(map(str, zones.columns)), 200)}, expected {', '.join(ZONE_COLUMNS)}")
    if len(zones) != ZONE_COUNT or not zones["LocationID"].is_unique:
        raise bad(f"{len(zones)} rows with {zones['LocationID'].nunique()} distinct LocationIDs, expected {ZONE_COUNT}")
    return zones


def _origin_of_zones(files: UpstreamFiles, url: str) -> dict[str, object]:
    """Where the lookup came from: its URL, or the public one and "bundled sample" (mirror.recorded_source)."""
    origin = recorded_source(files.base, url, zone_lookup_url(PUBLIC_BASE_URL[files.source.name]))
    return {"source_url": dg.MetadataValue.url(origin.pop("source_url")), **origin}


def build_taxi_zones(target: str) -> dg.AssetsDefinition:
    """`taxi/zones`, with the kinds of `target`'s warehouse (the lookup is the same for both sources)."""

    @dg.asset(
        key=ZONES_KEY,
        group_name=ANALYTICS,
        kinds={"pandas", WAREHOUSE_KIND[target]},
        automation_condition=ZONES_WHEN_MISSING,
        check_specs=[
            dg.AssetCheckSpec(ZONES_COMPLETE, asset=ZONES_KEY, blocking=True, description="265 rows, unique LocationID")
        ],
    )
    def taxi_zones(context: dg.AssetExecutionContext, upstream_files: UpstreamFiles, warehouse: Warehouse):
        """The taxi zone lookup (`{TAXI_SOURCE_URL}/misc/taxi_zone_lookup.csv`): LocationID, Borough,
        Zone, service_zone for the 265 zones, as the warehouse table `zones`. "N/A" and "NA" are real
        values in it (zone 265's service zone, zone 264's name), read as text, not as NULL. Checked
        before it is stored (its columns, 265 rows, unique ids), then the table is replaced in one
        step: a bad lookup fails the run and leaves the table as it was."""
        progress = Progress(context.log, "zones")
        progress.say(f"downloading the zone lookup into `{ZONES_TABLE}`")
        try:
            url, data = upstream_files.zone_lookup()
        except UpstreamError as exc:
            raise dg.Failure(
                description=f"taxi zones: {exc}; the zones table is unchanged", allow_retries=False
            ) from exc
        zones = _read_zones(url, data)
        with failing_fast("taxi/zones"):
            rows = warehouse.replace_table(ZONES_TABLE, pa.Table.from_pandas(zones, preserve_index=False))
        progress.done(f"{rows:,} zones in `{ZONES_TABLE}` ({len(data) / 1e3:,.1f} KB downloaded)")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                **_origin_of_zones(upstream_files, url),
                "dagster/column_schema": column_schema(pa.Schema.from_pandas(zones, preserve_index=False)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ZONES_COMPLETE,
                    passed=rows == ZONE_COUNT,
                    metadata={"rows": rows, "unique_location_ids": True},
                )
            ],
        )

    return taxi_zones


# Run states in which a run that will materialize taxi/zones is still coming.
_ZONES_COMING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# On a fresh instance the automation sensor loads the zones in a run of its own, which may still be
# queued or going when a first backfill's statistics step starts; that run takes seconds.
ZONES_WAIT_SECONDS = 300
# The step looks again 2 s later, then twice as long each time up to 30 s: about 13 looks in the
# 300 s, each holding the `warehouse` slot for one query; the slot is free in between.
ZONES_FIRST_LOOK_SECONDS, ZONES_LOOK_MAX_SECONDS = 2, 30


def _zones_look_delay(retry: int) -> int:
    return min(ZONES_LOOK_MAX_SECONDS, ZONES_FIRST_LOOK_SECONDS * 2**retry)


def _require_zones(context: dg.AssetExecutionContext, warehouse: Warehouse, month: TripMonth) -> None:
    """Return when the warehouse has the zones table. While a run that materializes taxi/zones is
    coming, end this attempt and look again later: a step retry waits outside the `warehouse` pool,
    so its slot goes to the loads meanwhile (a step never sleeps holding it). When no run is loading
    them, or after ZONES_WAIT_SECONDS, fail naming the fix."""
    if warehouse.has_table(ZONES_TABLE):
        return
    coming = [
        record.dagster_run
        for record in context.instance.get_run_records(dg.RunsFilter(statuses=_ZONES_COMING))
        if ZONES_KEY in (record.dagster_run.asset_selection or ())
    ]
    retry = context.retry_number
    waited = sum(_zones_look_delay(n) for n in range(retry))
    if coming and waited < ZONES_WAIT_SECONDS:
        delay = _zones_look_delay(retry)
        context.log.info(
            f"run {coming[0].run_id} is loading the zone lookup into `{ZONES_TABLE}`: looking again in {delay} s, "
            "with the `warehouse` slot free meanwhile"
        )
        raise dg.RetryRequested(max_retries=retry + 1, seconds_to_wait=delay)
    gave_up = f" (waited about {waited} s for run {coming[0].run_id})" if coming else ""
    raise dg.Failure(
        description=f"partition {month}: the warehouse has no table `{ZONES_TABLE}`: taxi/zones has not been "
        f"materialized{gave_up}. Materialize it once (UI: Assets > taxi/zones > Materialize, or "
        "`dagster asset materialize -m taxi_assets.definitions --select taxi/zones`), or turn on the "
        f"sensor `{AUTOMATION_SENSOR}`, which does it when it is missing; then rerun this partition",
        allow_retries=False,
    )


# monthly_trip_stats: eager(), for every partition whose slice was reloaded, not only the newest
# month (dagster #24474). Never while the zones are missing: eager()'s "no dependency missing" counts
# them as missing even in the tick that requests them (they load in a run of their own). And not
# while a run is loading the slice, but as soon as that run has finished, even if the backfill it
# belongs to has not caught up: eager()'s "no dependency in progress" also counts a partition as
# in progress until the backfill daemon's next look at its backfill (every 30 s under `make dev`),
# which kept the statistics of a 2-partition backfill waiting about 50 s after its runs ended.
STATS_CONDITION = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .replace(
        "any_deps_in_progress",
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.run_in_progress()).with_label(
            "any_deps_run_in_progress"
        ),
    )
)


# trips_per_month_chart: eager() without its "no dependency missing" (the one dependency is
# partitioned, and most of its partitions are never loaded, so eager() alone would never draw the
# chart), and not while a slice that the statistics follow is being loaded or was loaded since the
# last tick (its statistics are coming). Without that, a backfill whose partitions ended a tick
# apart had the chart drawn beside the second month's statistics run; that run ended while the
# chart's ran, eager() counted the chart as handled, and it stayed without that month (seen with
# ticks every 10 s: the chart not redrawn in 600 s).
CHART_CONDITION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()) & ~(
    dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_deps_match(
            dg.AutomationCondition.run_in_progress() | dg.AutomationCondition.newly_updated()
        )
    ).with_label("statistics coming")
)


def build_monthly_trip_stats(
    source: Source, target: str, partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    """`monthly_trip_stats` on `source`'s grid, with the kinds of `target`'s warehouse."""

    @dg.asset(
        partitions_def=partitions_def,
        group_name=ANALYTICS,
        kinds={"sql", WAREHOUSE_KIND[target]},
        deps=["bq_rides_table", ZONES_KEY],
        # One writer of the table at a time, like the slice swaps; a transaction aborted by a
        # concurrent one anyway (two instances, CLI runs) is run again by the warehouse.
        pool="warehouse",
        retry_policy=STORAGE_RETRY,
        automation_condition=STATS_CONDITION,
        check_specs=per_partition(
            partitions_def,
            [
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
        ),
    )
    def monthly_trip_stats(context: dg.AssetExecutionContext, warehouse: Warehouse):
        """Per pickup borough, for the month x color slice of `rides`: trips, passengers, total and
        median fare, mean distance, the tip share of card fares (tips / fares where payment_type = 1),
        and trips whose pickup falls outside the month. Computed by the warehouse in SQL over the
        slice, and stored by it: in one transaction, this partition's rows of the table
        `monthly_trip_stats` are deleted and the new ones inserted (a rerun replaces them)."""
        month = TripMonth.from_context(context, source.colors)
        empty = month.no_file_reason(source)
        if empty is not None:  # a cell before the color's first file: no slice, no statistics
            return dg.MaterializeResult(
                metadata={"dagster/row_count": 0, "no_file": empty},
                check_results=[
                    dg.AssetCheckResult(check_name=name, passed=True, metadata={"no_file": empty})
                    for name in (TRIPS_ADD_UP, LOCATION_IDS_HAVE_ZONES)
                ],
            )
        progress = Progress(context.log, "statistics")
        with failing_fast(month):
            _require_zones(context, warehouse, month)
            progress.say(f"per pickup borough over the {month.color} {month.ym} slice of `{RIDES_TABLE}`, in SQL")
            tables = {"rides": warehouse.table_name(RIDES_TABLE), "zones": warehouse.table_name(ZONES_TABLE)}
            params = {"color": month.color, "month": month.month}
            dialect = warehouse.dialect
            warehouse.replace_rows(
                STATS_TABLE,
                columns=STATS_COLUMNS[dialect],
                delete_where=STATS_PARTITION[dialect],
                select=MONTHLY_STATS[dialect].format(**tables),
                params={**params, "next": month.next_month},
            )
            stats_table = warehouse.table_name(STATS_TABLE)
            stats = warehouse.query(STATS_OF_PARTITION[dialect].format(stats=stats_table), params)
            stats["passengers"] = stats["passengers"].astype("Int64")  # a count; NULL where a color has none
            slice_rows = warehouse.slice_rows(month.color, month.month)
            coverage = warehouse.query(ZONE_COVERAGE[dialect].format(**tables), params).iloc[0]
        ids, unknown, missing = (int(coverage[name]) for name in ("ids", "unknown", "missing"))
        counted = int(stats["trips"].sum()) if len(stats) else 0
        boroughs = f"{len(stats)} borough{'' if len(stats) == 1 else 's'}"
        progress.done(f"{boroughs}, {counted:,} trips of the slice's {slice_rows:,} rows")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(stats),  # one row per pickup borough
                "table": shown_table_name(stats_table),
                "month": month.ym,
                "trips": counted,
                "preview": dg.MetadataValue.md(stats_preview(stats)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=TRIPS_ADD_UP,
                    passed=counted == slice_rows,
                    metadata={"trips_in_stats": counted, "rows_in_slice": slice_rows},
                ),
                dg.AssetCheckResult(
                    check_name=LOCATION_IDS_HAVE_ZONES,
                    passed=unknown == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "location_ids": ids,
                        "ids_without_zone": unknown,
                        "percent_without_zone": round(100 * unknown / ids, 2) if ids else 0.0,
                        "null_location_ids": missing,
                    },
                ),
            ],
        )

    return monthly_trip_stats


def stats_preview(stats: pd.DataFrame) -> str:
    """A partition's statistics as a Markdown table that fits the page: one row per borough (the
    month and color are the partition's), money in dollars and cents, miles to two decimals, the tip
    share as a percentage, counts as integers, "-" where a color has no such figure."""

    def shown(value, form: str) -> str:
        return "-" if value is None or pd.isna(value) else form.format(value)

    rows = {
        "pickup borough": stats["pickup_borough"],
        "trips": [shown(v, "{:,}") for v in stats["trips"]],
        "passengers": [shown(v, "{:,}") for v in stats["passengers"]],
        "total fare $": [shown(v, "{:,.2f}") for v in stats["total_fare"]],
        "median fare $": [shown(v, "{:,.2f}") for v in stats["median_fare"]],
        "mean miles": [shown(v, "{:,.2f}") for v in stats["mean_distance"]],
        "card tip %": [shown(v, "{:.1%}") for v in stats["card_tip_share"]],
        "pickups outside month": [shown(v, "{:,}") for v in stats["pickups_outside_month"]],
    }
    return markdown_table(pa.table({name: pa.array(list(values), pa.string()) for name, values in rows.items()}))


# One distinct line per taxi color.
COLOR_OF = {"yellow": "#e0a800", "green": "#2ca02c", "fhv": "#6f42c1", "fhvhv": "#d62728"}


def monthly_trips(trips: pd.DataFrame) -> pd.DataFrame:
    """Trips per month (rows, as YYYY-MM) and color (columns), every month from the first loaded to
    the last: a month not loaded for a color is missing (NA), not 0 and not left out, so the chart
    breaks its line there."""
    months = pd.to_datetime(trips["month"])
    if months.dt.tz is not None:  # BigQuery's TIMESTAMPs come back in UTC; a month is a month
        months = months.dt.tz_convert(None)
    months = months.dt.to_period("M")
    table = (
        trips.assign(month=months)
        .pivot_table(index="month", columns="color", values="trips", aggfunc="sum")
        .astype("Int64")  # counts: integers, NA where not loaded
    )
    if len(table):
        table = table.reindex(pd.period_range(months.min(), months.max(), freq="M"))
    table.index = table.index.strftime("%Y-%m")
    table.index.name = "month"
    table.columns.name = None
    return table


def chart_png(trips: pd.DataFrame) -> bytes:
    """The chart of `trips` (month, color, trips rows) as a PNG: one line per color, broken where a
    month is not loaded (a line across it would read as data), a marker on each loaded month."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot as plt

    table = monthly_trips(trips)
    figure, axes = plt.subplots(figsize=(10, 5), dpi=100)
    x = pd.PeriodIndex(table.index, freq="M").to_timestamp()
    for color in table.columns:
        y = table[color].astype("float64")  # NA -> NaN: matplotlib draws no segment to or from it
        axes.plot(x, y, marker="o", linewidth=2, color=COLOR_OF.get(color), label=color)
    axes.set_title("NYC TLC trips per month")
    axes.set_ylabel("trips")
    if len(table.columns):
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
    automation_condition=CHART_CONDITION,
)
def trips_per_month_chart(context: dg.AssetExecutionContext, warehouse: Warehouse, workdir: WorkDir):
    """A line chart of trips per month for each color, over every month loaded in
    `monthly_trip_stats` (summed by the warehouse), as a PNG in the lake
    (`reports/trips_per_month.png`), shown here with its figures."""
    progress = Progress(context.log, "chart")
    progress.say(f"trips per month for each color, from `{STATS_TABLE}`")
    with failing_fast("trips_per_month_chart"):
        if warehouse.has_table(STATS_TABLE):
            trips = warehouse.query(TRIPS_PER_MONTH[warehouse.dialect].format(stats=warehouse.table_name(STATS_TABLE)))
        else:
            # No statistics yet: on the tlc source the grid upkeep records the cells before a color's
            # first file (statistics included) before any month is loaded, which this chart follows.
            trips = pd.DataFrame({"month": pd.Series(dtype="datetime64[ns]"), "color": [], "trips": []})
    png = chart_png(trips)
    path = workdir.path("trips_per_month.png")
    with failing_fast("trips_per_month_chart"), writing(path):
        path.write_bytes(png)
    table = monthly_trips(trips)
    span = f" ({table.index[0]} to {table.index[-1]})" if len(table) else ""
    progress.done(
        f"{trips['month'].nunique()} months loaded{span}, {trips['color'].nunique()} colors, "
        f"a {len(png) / 1e3:,.1f} KB PNG"
    )
    # The months loaded (a color that lacks one: a blank cell); the chart shows the gaps between.
    figures = pa.Table.from_pandas(table.dropna(how="all").reset_index(), preserve_index=False)
    image = base64.b64encode(png).decode()
    return dg.MaterializeResult(
        value=NewFile(path),
        metadata={
            # Dagster 1.13 has no image metadata: Markdown over 1,000 characters opens in one click
            # ("[Show Markdown]") from the asset's page; the figures below, when short, show inline.
            "chart": dg.MetadataValue.md(f"![trips per month](data:image/png;base64,{image})"),
            "trips_per_month": dg.MetadataValue.md(markdown_table(figures)),
            "months_loaded": int(trips["month"].nunique()),
            "first_month": table.index[0] if len(table) else "none loaded",
            "last_month": table.index[-1] if len(table) else "none loaded",
        },
    )


# The automation conditions above (zones when missing, statistics after a slice is reloaded, the
# chart after them) are evaluated by this sensor. It runs from the moment the code location first
# loads: on a fresh deployment nothing else would load the zones that the statistics need. It
# requests plain runs, not backfills, so the zones run starts as soon as the run queue allows.
analytics_automation = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.groups(ANALYTICS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    # Dagster's default, 30 s, made the statistics wait for a tick after a slice was loaded and the
    # chart for another after them (about 30 s of a 2-partition backfill's 54 s to the chart on
    # `make serve`). 10 s by default (TAXI_AUTOMATION_INTERVAL_SECONDS): the chart within 45 s of a
    # launch with the daemon at rest no busier than before (5 s, as often as Dagster's asset daemon
    # looks, cost the idle daemon a quarter more; docs/performance.md#from-a-backfill-to-the-chart).
    minimum_interval_seconds=settings.automation_interval_seconds(),
    emit_backfills=False,
    description="Materializes taxi/zones when missing, monthly_trip_stats after its slice of rides is reloaded, "
    "and the chart after the statistics change",
)
