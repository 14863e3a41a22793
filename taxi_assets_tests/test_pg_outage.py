"""`make serve` on a real PostgreSQL server that goes away for 20 s in the middle of a backfill
(a fast shutdown: sessions cut, as `pg_ctl -m fast stop`): the storages (deploy/taxi_storage.py)
wait for it instead of failing. Every run succeeds, each event is written once, the slices are
exact, and the webserver answers right after the restart."""

import contextlib
import time
import urllib.error
from pathlib import Path

import duckdb
import psycopg2
import pytest

from taxi_assets_harness.graphql import graphql, runs, wait_until
from taxi_assets_harness.instances import backfill_runs, launch_backfill, make_serve
from taxi_assets_harness.postgres import postgres_server, server_binaries
from taxi_assets_tests.helpers import real_rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.extended,
    pytest.mark.skipif(
        server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
    ),
]
ROOT = Path(__file__).resolve().parents[1]
MONTHS = [f"2020-{m:02d}" for m in range(1, 13)]
KEYS = [f"yellow|{ym}-01" for ym in MONTHS]
ROWS = real_rows("yellow_tripdata_2021-01_head3000.csv")
OUTAGE_SECONDS = 20
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
# What a run of the trip assets writes once and only once, whatever it waited for (engine events
# and log messages differ between runs: pool waits, reconnects).
COUNTED = (
    "RUN_START",
    "RUN_SUCCESS",
    "STEP_START",
    "STEP_SUCCESS",
    "STEP_OUTPUT",
    "HANDLED_OUTPUT",
    "LOADED_INPUT",
    "ASSET_MATERIALIZATION",
    "ASSET_MATERIALIZATION_PLANNED",
    "ASSET_CHECK_EVALUATION",
    "ASSET_CHECK_EVALUATION_PLANNED",
)


def _partition_of(run: dict) -> str:
    return next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition")


def _backfill_status(port: int, backfill: str) -> str:
    return graphql(
        port, f'{{ partitionBackfillOrError(backfillId: "{backfill}") {{ ... on PartitionBackfill {{ status }} }} }}'
    )["partitionBackfillOrError"]["status"]


def _finished(port: int, backfill: str):
    found = backfill_runs(port, backfill)
    if any(r["status"] == "FAILURE" for r in found):
        return found
    done = len(found) == len(KEYS) and all(r["status"] in FINISHED for r in found)
    return found if done and _backfill_status(port, backfill) != "REQUESTED" else None


def _event_counts(pg_url: str, run_ids: list[str]) -> dict[str, dict[str, int]]:
    with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, dagster_event_type, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY 1, 2",
            (run_ids,),
        )
        counts: dict[str, dict[str, int]] = {run_id: {} for run_id in run_ids}
        for run_id, kind, n in cur.fetchall():
            if kind in COUNTED:
                counts[run_id][kind] = n
        return counts


def _runs_across(pg_url: str, run_ids: list[str], down: float, up: float) -> list[str]:
    """The runs with events before `down` and after `up` (epoch seconds; stored as naive UTC)."""
    with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id "
            "HAVING extract(epoch FROM min(timestamp)) < %s AND extract(epoch FROM max(timestamp)) > %s",
            (run_ids, down, up),
        )
        return [row[0] for row in cur.fetchall()]


def _duplicated_events(pg_url: str) -> list[tuple]:
    """Event rows stored twice: the same run and the same serialized event (it carries its timestamp)."""
    with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, dagster_event_type, count(*) FROM event_logs GROUP BY run_id, event, dagster_event_type "
            "HAVING count(*) > 1"
        )
        return cur.fetchall()


# Two 12-partition backfills: 3-4 minutes each here with the machine shared (about 1 alone).
@pytest.mark.timeout(1800)
def test_a_backfill_rides_out_a_20_s_postgres_outage(mirror, tmp_path):
    for ym in MONTHS:
        mirror.publish("yellow", ym, ROWS)
    with (
        postgres_server(tmp_path / "pg") as pg,
        make_serve(tmp_path, pg.url, {"TAXI_SOURCE_URL": mirror.base_url}) as port,
    ):
        logs = tmp_path / "home" / "serve-logs"

        # Fault-free first: the reference for the wall time and for what each run writes.
        started = time.monotonic()
        clean = launch_backfill(port, KEYS)
        clean_runs = wait_until(lambda: _finished(port, clean), 600, "the fault-free backfill", interval=1)
        clean_seconds = time.monotonic() - started
        assert {r["status"] for r in clean_runs} == {"SUCCESS"}, (logs / "daemon.log").read_text()[-3000:]

        # The same partitions again; PostgreSQL stopped (fast) for 20 s once 2 runs have succeeded.
        started = time.monotonic()
        backfill = launch_backfill(port, KEYS)

        def two_done_and_more_running():
            found = backfill_runs(port, backfill)
            done = sum(r["status"] == "SUCCESS" for r in found)
            return done >= 2 and any(r["status"] == "STARTED" for r in found)

        wait_until(two_done_and_more_running, 300, "2 runs of the second backfill", interval=0.25)
        down_at, down_wall = time.monotonic(), time.time()
        pg.stop(fast=True)
        time.sleep(OUTAGE_SECONDS)
        pg.start()
        up_at, up_wall = time.monotonic(), time.time()

        # The webserver's kept connections died with the server: the next requests answer, without
        # waiting for the bound (checked after the backfill, so that a failure shows both).
        web_errors = []
        for _ in range(5):
            try:
                runs(port)
            except urllib.error.HTTPError as error:
                web_errors.append(f"HTTP {error.code}: {error.read()[:300]!r}")
        web_seconds = time.monotonic() - up_at

        outage_runs = wait_until(lambda: _finished(port, backfill), 600, "the backfill after the outage", interval=1)
        outage_seconds = time.monotonic() - started
        daemon_log = (logs / "daemon.log").read_text()
        assert {_partition_of(r): r["status"] for r in outage_runs} == dict.fromkeys(KEYS, "SUCCESS"), (
            web_errors,
            daemon_log[-3000:],
        )
        assert _backfill_status(port, backfill) == "COMPLETED_SUCCESS"
        assert _backfill_status(port, clean) == "COMPLETED_SUCCESS"
        assert web_errors == []
        assert web_seconds < 10, web_seconds
        # Runs that were going while the server was down: events on both sides of the outage.
        spanning = _runs_across(pg.url, [r["runId"] for r in outage_runs], down_wall, up_wall)
        assert spanning, "no run was going during the outage: the test proved nothing"
        assert "answers again" in daemon_log  # the daemon waited for the server, and said so

        # Each event once: no run wrote more of anything than the fault-free run of its partition.
        clean_by_partition = {_partition_of(r): r["runId"] for r in clean_runs}
        outage_by_partition = {_partition_of(r): r["runId"] for r in outage_runs}
        counts = _event_counts(pg.url, [*clean_by_partition.values(), *outage_by_partition.values()])
        for key in KEYS:
            assert counts[outage_by_partition[key]] == counts[clean_by_partition[key]], key
            assert counts[outage_by_partition[key]]["ASSET_MATERIALIZATION"] == 4
        assert _duplicated_events(pg.url) == []

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = dict(conn.execute("SELECT strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall())
    assert slices == dict.fromkeys(MONTHS, len(ROWS) - 1)
    print(
        f"backfill of {len(KEYS)} partitions: {clean_seconds:.0f} s fault-free, {outage_seconds:.0f} s with PostgreSQL "
        f"down {up_at - down_at:.0f} s ({len(spanning)} runs going during the outage; "
        f"{daemon_log.count('and will retry')} backfill iterations retried)"
    )
