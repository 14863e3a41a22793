"""The analytics assets' SQL, one text per warehouse dialect, run by `Warehouse.query`.

Table names are `{rides}`, `{zones}` and `{stats}` (filled with `Warehouse.table_name`); parameters
are `$name` in DuckDB and `@name` in BigQuery: `color`, `month` (a DATE) and `next` (the month after).
The month's rows stay in the warehouse: one row per borough comes back.
"""

# Per pickup borough, over one slice. Card payments are payment_type 1. BigQuery has no exact
# median aggregate: it takes APPROX_QUANTILES' middle value.
MONTHLY_STATS = {
    "duckdb": """
SELECT CAST($month AS TIMESTAMP) AS month, $color AS color,
       coalesce(z.Borough, 'Unknown') AS pickup_borough,
       count(*) AS trips,
       sum(r.passenger_count) AS passengers,
       sum(r.fare_amount) AS total_fare,
       median(r.fare_amount) AS median_fare,
       avg(r.trip_distance) AS mean_distance,
       sum(r.tip_amount) FILTER (WHERE r.payment_type = 1)
         / nullif(sum(r.fare_amount) FILTER (WHERE r.payment_type = 1), 0) AS card_tip_share,
       count(*) FILTER (WHERE r.pickup_datetime < $month OR r.pickup_datetime >= $next) AS pickups_outside_month
FROM {rides} r LEFT JOIN {zones} z ON r.PULocationID = z.LocationID
WHERE r.color = $color AND r.month = $month
GROUP BY ALL
ORDER BY pickup_borough
""",
    "bigquery": """
SELECT TIMESTAMP(@month) AS month, @color AS color,
       COALESCE(z.Borough, 'Unknown') AS pickup_borough,
       COUNT(*) AS trips,
       SUM(r.passenger_count) AS passengers,
       SUM(r.fare_amount) AS total_fare,
       APPROX_QUANTILES(r.fare_amount, 100)[SAFE_OFFSET(50)] AS median_fare,
       AVG(r.trip_distance) AS mean_distance,
       SAFE_DIVIDE(SUM(IF(r.payment_type = 1, r.tip_amount, NULL)), SUM(IF(r.payment_type = 1, r.fare_amount, NULL)))
         AS card_tip_share,
       COUNTIF(r.pickup_datetime < TIMESTAMP(@month) OR r.pickup_datetime >= TIMESTAMP(@next)) AS pickups_outside_month
FROM {rides} r LEFT JOIN {zones} z ON r.PULocationID = z.LocationID
WHERE r.color = @color AND r.month = @month
GROUP BY pickup_borough
ORDER BY pickup_borough
""",
}

# The slice's pickup and dropoff location ids against the zone lookup: ids, ids the lookup does
# not know, NULL ids.
ZONE_COVERAGE = {
    "duckdb": """
WITH slice AS (SELECT PULocationID, DOLocationID FROM {rides} WHERE color = $color AND month = $month),
ids AS (SELECT PULocationID AS id FROM slice UNION ALL SELECT DOLocationID FROM slice)
SELECT count(id) AS ids, count(id) FILTER (WHERE id NOT IN (SELECT LocationID FROM {zones})) AS unknown,
       count(*) - count(id) AS missing
FROM ids
""",
    "bigquery": """
WITH slice AS (SELECT PULocationID, DOLocationID FROM {rides} WHERE color = @color AND month = @month),
ids AS (SELECT PULocationID AS id FROM slice UNION ALL SELECT DOLocationID AS id FROM slice)
SELECT COUNT(id) AS ids, COUNTIF(id IS NOT NULL AND id NOT IN (SELECT LocationID FROM {zones})) AS unknown,
       COUNTIF(id IS NULL) AS missing
FROM ids
""",
}

# Trips per month and color over every slice in monthly_trip_stats. Aliased: BigQuery names result
# columns as the table does, and a table made by an earlier version of this project (through
# Dagster's pandas IO manager) has upper-case column names.
TRIPS_PER_MONTH = {
    "duckdb": "SELECT month, color, sum(trips) AS trips FROM {stats} GROUP BY ALL ORDER BY ALL",
    "bigquery": "SELECT month AS month, color AS color, SUM(trips) AS trips FROM {stats} GROUP BY 1, 2 ORDER BY 1, 2",
}

# monthly_trip_stats: written by the warehouse in one transaction (`Warehouse.replace_rows`): the
# partition's rows deleted, MONTHLY_STATS' rows inserted, in this column order.
STATS_COLUMNS = {
    "duckdb": "month TIMESTAMP, color VARCHAR, pickup_borough VARCHAR, trips BIGINT, passengers BIGINT, "
    "total_fare DOUBLE, median_fare DOUBLE, mean_distance DOUBLE, card_tip_share DOUBLE, pickups_outside_month BIGINT",
    "bigquery": "month TIMESTAMP, color STRING, pickup_borough STRING, trips INT64, passengers INT64, "
    "total_fare FLOAT64, median_fare FLOAT64, mean_distance FLOAT64, card_tip_share FLOAT64, "
    "pickups_outside_month INT64",
}
# One partition's rows of monthly_trip_stats.
STATS_PARTITION = {
    "duckdb": "color = $color AND month = CAST($month AS TIMESTAMP)",
    "bigquery": "color = @color AND month = TIMESTAMP(@month)",
}
# Those rows, read back after the transaction. Aliased, as TRIPS_PER_MONTH is.
_STATS_NAMES = (
    "month",
    "color",
    "pickup_borough",
    "trips",
    "passengers",
    "total_fare",
    "median_fare",
    "mean_distance",
    "card_tip_share",
    "pickups_outside_month",
)
STATS_OF_PARTITION = {
    dialect: f"SELECT {', '.join(f'{name} AS {name}' for name in _STATS_NAMES)} FROM {{stats}} "
    f"WHERE {where} ORDER BY pickup_borough"
    for dialect, where in STATS_PARTITION.items()
}
