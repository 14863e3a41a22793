"""The instance's PostgreSQL storages (deploy/taxi_storage.py) against a real server that stops
under them: a call waits for it to come back, up to DAGSTER_PG_OUTAGE_SECONDS, then fails naming
the database and the time waited; a statement whose connection is cut in flight (the backend
terminated, as a fast shutdown does) runs again, and an event write cut before or after its row
landed stores the event exactly once. The webserver's engines survive a restart too."""

import contextlib
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from taxi_assets_harness.postgres import postgres_server, server_binaries

pytestmark = pytest.mark.skipif(
    server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
)
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "0utage-Secret-pw"


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """One password-protected server for this module's tests (each leaves it running)."""
    with postgres_server(tmp_path_factory.mktemp("pg"), password=PASSWORD) as server:
        yield server


@pytest.fixture
def pg_instance(pg, tmp_path, monkeypatch):
    """(server, instance): deploy/dagster.yaml's storages on the server, which is started again
    after the test if the test left it stopped."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    monkeypatch.syspath_prepend(str(ROOT / "deploy"))
    from serve import sqlalchemy_url

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_SQLALCHEMY_URL", sqlalchemy_url(pg.url))
    try:
        with dg.DagsterInstance.get() as instance:
            yield pg, instance
    finally:
        if pg.process is None or pg.process.poll() is not None:
            pg.start()


def test_the_private_names_it_relies_on_are_there():
    import sys

    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import taxi_storage
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    for cls, kind in (
        (taxi_storage.PooledPostgresRunStorage, "run"),
        (taxi_storage.PooledPostgresEventLogStorage, "event_log"),
        (taxi_storage.PooledPostgresScheduleStorage, "schedule"),
    ):
        for name in taxi_storage.RETRIED[kind]:
            assert getattr(cls, name).__wrapped__, (cls, name)  # wrapped: the name exists in this Dagster
    # Reads the daemon and runs make, run again after a cut (the backfill loop's, seen cut in an outage).
    reads = taxi_storage.read_methods(taxi_storage.PooledPostgresEventLogStorage)
    assert {"get_asset_event_summary_records", "get_records_for_run", "has_pending_step"} <= set(reads)
    assert {"get_runs", "get_run_records", "get_backfill"} <= set(
        taxi_storage.read_methods(taxi_storage.PooledPostgresRunStorage)
    )


def test_calls_wait_for_a_stopped_server_then_go_on(pg_instance):
    pg, instance = pg_instance
    assert instance.get_runs() == []
    storage = instance.event_log_storage
    storage.set_concurrency_slots("warehouse", 1)
    pg.stop(fast=True)
    restart = threading.Timer(15, pg.start)  # longer than dagster-postgres' own retries (11.4 ± 1 s)
    restart.start()
    started = time.monotonic()
    try:
        claimed = storage.claim_concurrency_slot("warehouse", "a-run", "a-step")
    finally:
        restart.join()
    waited = time.monotonic() - started
    assert claimed.is_claimed
    assert 14.5 < waited < 45, waited
    assert storage.get_concurrency_info("warehouse").claimed_slots[0].run_id == "a-run"


def test_past_the_bound_the_error_names_the_database_and_the_time(pg_instance, monkeypatch):
    pg, instance = pg_instance
    instance.get_runs()
    monkeypatch.setenv("DAGSTER_PG_OUTAGE_SECONDS", "3")
    pg.stop(fast=True)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        instance.get_runs()
    waited = time.monotonic() - started
    message = str(raised.value)
    assert type(raised.value).__name__ == "PostgresUnavailable"
    assert f"PostgreSQL at 127.0.0.1:{pg.port}/dagster did not answer for 3 s (DAGSTER_PG_OUTAGE_SECONDS=3)" in message
    assert "Connection refused" in message
    assert PASSWORD not in message
    assert 3 <= waited < 12, waited  # once, not again by dagster-postgres' own 5 retries
    pg.start()
    assert instance.get_runs() == []


@contextlib.contextmanager
def _cut_connection_once(pg, statement_start: str, when: str):
    """Terminate the backend of the first statement starting with `statement_start`, before it is
    sent (`when="before"`) or right after it completed (`"after"`), as a fast shutdown would."""
    done = threading.Event()

    def cut(_conn, cursor, statement, *_args):
        if done.is_set() or not statement.lstrip().upper().startswith(statement_start):
            return
        done.set()
        pid = cursor.connection.get_backend_pid()
        with contextlib.closing(pg.connect("postgres")) as admin:
            admin.autocommit = True
            admin.cursor().execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    event = "before_cursor_execute" if when == "before" else "after_cursor_execute"
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, event, cut)
    try:
        yield done
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, event, cut)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_event_write_cut_in_flight_is_stored_once(pg_instance, when):
    pg, instance = pg_instance
    key = dg.AssetKey(f"cut_{when}")
    with _cut_connection_once(pg, "INSERT INTO EVENT_LOGS", when) as cut:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=key, partition="2020-01", tags={"dagster/code_version": "v1"})
        )
    assert cut.is_set()
    records = instance.fetch_materializations(key, limit=10).records
    assert len(records) == 1
    assert instance.get_materialized_partitions(key) == {"2020-01"}
    # The asset index: the asset is listed, with this event as its latest.
    assert instance.get_asset_records([key])[0].asset_entry.last_materialization_record.storage_id == (
        records[0].storage_id
    )


def test_a_pool_claim_cut_in_flight_is_claimed_once(pg_instance):
    pg, instance = pg_instance
    storage = instance.event_log_storage
    storage.set_concurrency_slots("upstream", 2)
    with _cut_connection_once(pg, "SELECT CONCURRENCY_SLOTS.ID", "before") as cut:
        claimed = storage.claim_concurrency_slot("upstream", "a-run", "a-step")
    assert cut.is_set()
    assert claimed.is_claimed
    info = storage.get_concurrency_info("upstream")
    assert [(s.run_id, s.step_key) for s in info.claimed_slots] == [("a-run", "a-step")]


def test_the_webservers_engines_check_their_connection_after_a_restart(pg_instance):
    """Dagster's optimize_for_webserver kept a connection without a pre-ping: the first request
    after a PostgreSQL restart failed (HTTP 500 in the webserver)."""
    pg, instance = pg_instance
    instance.optimize_for_webserver(statement_timeout=5000, pool_recycle=3600, max_overflow=20)
    assert instance.get_runs() == []
    assert instance.all_instigator_state() == []
    with instance.run_storage.connect() as conn:
        assert conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "5s"
    pg.stop(fast=True)
    pg.start()  # well under a second down
    # Each of the three storages answers at once (none waits: the server is up).
    started = time.monotonic()
    assert instance.get_runs() == []
    assert isinstance(instance.event_log_storage.get_concurrency_keys(), set)
    assert instance.all_instigator_state() == []
    assert time.monotonic() - started < 5


def test_a_read_cut_in_flight_is_run_again(pg_instance):
    """As the daemon's backfill loop read asset records when the server stopped under it."""
    pg, instance = pg_instance
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="read_asset"))
    with _cut_connection_once(pg, "SELECT ASSET_KEYS.", "before") as cut:
        records = instance.get_asset_records([dg.AssetKey("read_asset")])
    assert cut.is_set()
    assert [r.asset_entry.asset_key for r in records] == [dg.AssetKey("read_asset")]


def test_the_storages_ask_the_catalog_for_their_tables_once(pg_instance):
    """The run queue reads the runs every second and each sensor and automation tick reads its
    state; Dagster's storages asked PostgreSQL's catalog for table and column names on each call
    (about a third of the daemon's work at rest); what is seen once is remembered."""
    _, instance = pg_instance
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    try:
        for _ in range(20):  # 20 looks of the run queue, the backfill loop and the automation sensor
            assert instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])) == []
            assert instance.get_backfills() == []
            assert instance.all_instigator_state() == []
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    catalog = [s for s in statements if "pg_catalog" in s]
    assert len(statements) >= 60 and len(catalog) <= 5, (len(statements), catalog[:3])
