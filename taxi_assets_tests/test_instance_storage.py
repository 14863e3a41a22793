"""The production instance's storages (deploy/taxi_storage.py) on a real PostgreSQL server: a
run reuses its connections instead of opening one per statement, and a step blocked on its pool
starts soon after the slot is freed."""

import contextlib
import os
import time

import dagster as dg
import psycopg2
import pytest

from taxi_assets_harness.postgres import postgres_cluster, server_binaries
from taxi_assets_tests.helpers import real_rows
from taxi_assets_tests.pools import ROOT, free_slot, run_blocked_on_pool

pytestmark = pytest.mark.skipif(
    server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
)


def _sessions(pg_url: str) -> int:
    """Sessions opened on the database so far (PostgreSQL counts them when they end)."""
    with contextlib.closing(psycopg2.connect(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_stat_clear_snapshot(); SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return cur.fetchone()[0]


def test_a_run_reuses_its_connections_and_a_blocked_step_starts_soon_after_its_slot_is_freed(
    mirror, local_env, tmp_path, monkeypatch
):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_tail500.csv"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    with postgres_cluster(tmp_path / "pg") as pg_url:
        monkeypatch.syspath_prepend(str(ROOT / "deploy"))
        from serve import sqlalchemy_url  # as make serve derives it

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_PG_SQLALCHEMY_URL", sqlalchemy_url(pg_url))
        monkeypatch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "deploy"), os.environ.get("PYTHONPATH")]))
        )
        with dg.DagsterInstance.get() as instance:
            time.sleep(1.5)  # PostgreSQL's statistics of ended sessions are at most a second late
            sessions_before = _sessions(pg_url)
            log = tmp_path / "run.log"
            with run_blocked_on_pool(instance, "warehouse", "*bq_rides_table", "green|2020-10-01", log) as run:
                # Blocked a while: Dagster's own retries (1 s, growing 10% each) are 2.1 s apart by now.
                time.sleep(12)
                freed = time.time()
                free_slot(instance)
                run.wait(timeout=120)
            output = log.read_text()
            assert run.returncode == 0, output[-3000:]
            time.sleep(1.5)
            opened = _sessions(pg_url) - sessions_before - 1  # not our own query's session

            record = instance.get_run_records(limit=1)[0]
            events = instance.get_records_for_run(record.dagster_run.run_id, limit=1000).records
            load_started = next(
                r.event_log_entry.timestamp
                for r in events
                if r.event_log_entry.step_key == "bq_rides_table"
                and r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_START
            )
            assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            assert len(events) > 50  # what the run wrote: about 60 events
    # The load starts within a second of its slot being freed (a claim every 0.25 s, not 1-15 s).
    assert load_started - freed < 1.0, f"the load started {load_started - freed:.2f} s after its slot was freed"
    # One connection per statement was about 270 for such a run; reused: a handful per storage.
    assert opened < 40, f"the run opened {opened} connections"
