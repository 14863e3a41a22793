"""The instance's PostgreSQL storages (dagster-postgres'), with two changes for backfills of many
small partitions, a third for PostgreSQL outages and a fourth for a quiet daemon. deploy/dagster.yaml
names them; `make serve` and `make worker` put deploy/ on PYTHONPATH. They take dagster-postgres'
settings (`postgres_url` or `postgres_db`).

1. Connections are reused inside a process. dagster-postgres opens a new connection for every
   statement (SQLAlchemy's NullPool) so that an instance never holds connections it is not using. A
   run writes its events through two or three statements each, so one small partition's run opened
   hundreds of connections, each a PostgreSQL backend forked and authenticated (dagster #20325;
   no setting for it: dagster #33935). Here each storage's engine keeps one connection and reuses
   it (as Dagster's webserver does with `optimize_for_webserver`); threads that need one at the same
   time get more, closed when they are done. A kept connection is checked before each use (a
   PostgreSQL restart or an idle cut-off is a reconnect, not a failed statement), replaced after
   POOL_RECYCLE_SECONDS, and closed when its instance is disposed. An idle instance holds at most
   three; budget about three per process (daemon, webserver, code server, each run's process, each
   Celery pool process) and a few more while they are busy.
2. A step waiting for a pool slot (`warehouse`, `upstream`) asks again after POOL_CLAIM_RETRY_SECONDS,
   not after Dagster's 1 s growing to 15 s: a small partition's warehouse load takes a fraction of a
   second, and a slot left free for a second is a second the backfill loses per waiting run. Each
   retry is a few short statements on a kept connection. (The event log storage's claim result may
   carry this interval: `ConcurrencyClaimStatus.with_sleep_interval`, as Dagster's own test storage does.)
3. A PostgreSQL outage is waited out, up to DAGSTER_PG_OUTAGE_SECONDS (OUTAGE_SECONDS by default).
   dagster-postgres retries a failed connection a few times over seconds, then fails the statement
   ("too many retries for DB connection": a step claiming its pool slot failed for good, and its
   backfill with it). Here a new connection waits for the server instead (the engines' `do_connect`
   event), so those retries and every storage call reconnect into a wait; a statement cut while in
   flight (the server stopping under it) is run again on a new connection by every read and the
   writes in RETRIED, and an event write cut in flight first looks whether its row landed, so no event is
   written twice. Past the bound: PostgresUnavailable naming host:port/dbname and the time waited.
   The webserver's engines (Dagster's `optimize_for_webserver`, which builds them without a
   pre-ping) get the same pre-ping and wait.
4. What the schema holds is asked once (SCHEMA_CACHE in taxi_assets/dagster_internals.py): Dagster
   asks PostgreSQL's catalog whether a table or column exists on nearly every call, every second at
   rest; a yes is remembered.

Figures: docs/decisions.md#what-sets-a-backfills-pace-and-what-was-changed-in-dagsters-way,
docs/deploy.md#postgresql-outages.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import time
import warnings
import weakref

import sqlalchemy
from dagster import serialize_value
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

# The private names of dagster(-postgres)'s used here (POSTGRES_ENGINE, CLAIM_INTERVAL, EVENT_WRITE),
# from the one registry: a changed one leaves dagster-postgres' own behaviour, with one warning.
from taxi_assets.dagster_internals import (
    POSTGRES_ENGINE,
    asset_event_kinds,
    asset_event_tags_writer,
    changed,
    remember_schema_answers,
    replace_storage_engine,
    storage_engine,
    with_claim_retry,
)

# dagster-postgres 0.29's helpers and constructor (a token provider): without them (another
# dagster-postgres), the storages below are dagster-postgres' own, with one warning.
try:
    from dagster_postgres.utils import (
        create_pg_engine,
        get_token_provider_from_config,
        pg_url_from_config,
        set_pg_statement_timeout,
    )
except ImportError as error:
    changed(POSTGRES_ENGINE, repr(error))
    create_pg_engine = None

log = logging.getLogger("taxi_storage")

# A kept connection is replaced after this long: under the idle cut-offs in front of many servers
# (PgBouncer's server_idle_timeout is 600 s), and checked before each use anyway.
POOL_RECYCLE_SECONDS = 300
# A blocked step's next claim: 4 a second per waiting step.
POOL_CLAIM_RETRY_SECONDS = 0.25
# How long a PostgreSQL outage is waited out (DAGSTER_PG_OUTAGE_SECONDS overrides it): a restart,
# a failover or a minor-version upgrade takes seconds to a minute; 120 s rides out a 60 s outage
# with room for the server's own recovery, and is still short enough that a database gone for
# good shows up as failed runs within minutes.
OUTAGE_SECONDS = 120.0
OUTAGE_SETTING = "DAGSTER_PG_OUTAGE_SECONDS"
# One connection attempt gives up after this long (libpq's default is to wait for ever on a host
# that drops packets), then the next one starts, within the bound.
CONNECT_TIMEOUT_SECONDS = 10
# Attempts while the server is down: 0.2 s, doubling up to 2 s: back within 2 s of the server.
FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 0.2, 2.0
# What a server answers that waiting does not change: a wrong password, user or database, a
# refused client. Everything else (refused or reset connections, "the database system is starting
# up / shutting down", too many clients, an unresolvable host) is waited out.
PERMANENT = ("authentication failed", "does not exist", "pg_hba.conf", "no password supplied", "invalid")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL did not answer within the bound. Not a SQLAlchemy error on purpose: dagster-postgres
    retries those 5 more times, which would make the bound six times longer."""


def outage_seconds() -> float:
    """DAGSTER_PG_OUTAGE_SECONDS, or OUTAGE_SECONDS; a bad value is an error naming the setting."""
    value = os.environ.get(OUTAGE_SETTING) or str(OUTAGE_SECONDS)
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{OUTAGE_SETTING} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{OUTAGE_SETTING} must be 0 or more seconds, got {value!r}")
    return seconds


def database_name(params: dict) -> str:
    """host:port/dbname of a connection's parameters (never the user or password)."""
    host = params.get("host") or "local socket"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('database') or ''}"


def is_permanent(error: Exception) -> bool:
    """Whether waiting cannot change this connection error (a wrong password, a missing database)."""
    text = str(error)
    return any(marker in text for marker in PERMANENT)


def wait_for_server(connect, where: str, bound: float):
    """connect(), again and again while the server is unreachable, for up to `bound` seconds;
    then PostgresUnavailable. An error that waiting does not change is raised at once."""
    import psycopg2

    started = time.monotonic()
    pause = FIRST_WAIT_SECONDS
    waiting = False
    while True:
        try:
            connection = connect()
        except psycopg2.OperationalError as error:
            if is_permanent(error):
                raise
            waited = time.monotonic() - started
            if waited >= bound:
                raise PostgresUnavailable(
                    f"PostgreSQL at {where} did not answer for {waited:.0f} s ({OUTAGE_SETTING}={bound:g}): "
                    f"{one_line(error)}"
                ) from error
            if not waiting:
                waiting = True
                log.warning("PostgreSQL at %s unreachable (%s); waiting up to %g s", where, one_line(error), bound)
            time.sleep(min(pause, bound - waited))
            pause = min(pause * 2, LONGEST_WAIT_SECONDS)
            continue
        if waiting:
            log.warning("PostgreSQL at %s answers again after %.1f s", where, time.monotonic() - started)
        return connection


def one_line(error: BaseException) -> str:
    """An error's text on one line (libpq's messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def wait_out_outages(engine: sqlalchemy.engine.Engine) -> sqlalchemy.engine.Engine:
    """Every new connection of `engine` waits for the server (up to the bound) instead of failing.
    Registered after dagster-postgres' own `do_connect` hook (a token as password), which returns None."""

    @sqlalchemy.event.listens_for(engine, "do_connect")
    def connect(dialect, _record, cargs, cparams):
        params = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **cparams}
        return wait_for_server(lambda: dialect.connect(*cargs, **params), database_name(params), outage_seconds())

    return engine


def pooled_engine(postgres_url: str, token_provider, **kwargs) -> sqlalchemy.engine.Engine:
    """An engine that keeps a connection, checks it before each use and waits out outages."""
    options = {
        "isolation_level": "AUTOCOMMIT",
        "pool_size": 1,
        "max_overflow": -1,  # no limit: a thread never waits for another's connection
        "pool_recycle": POOL_RECYCLE_SECONDS,
        "pool_pre_ping": True,
        **kwargs,
    }
    return wait_out_outages(create_pg_engine(postgres_url, token_provider, **options))


def cut_in_flight(error: BaseException) -> bool:
    """A statement whose connection was lost under it (SQLAlchemy has invalidated the connection)."""
    return isinstance(error, sqlalchemy.exc.DBAPIError) and bool(error.connection_invalidated)


def retried_when_cut(method):
    """`method` run again on a new connection when the server cut its statement, for up to the bound
    from the first cut. Only for methods that can run twice: reads, updates, upserts, claims."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        deadline = None
        while True:
            try:
                return method(self, *args, **kwargs)
            except sqlalchemy.exc.DBAPIError as error:
                if not cut_in_flight(error):
                    raise
                deadline = deadline or time.monotonic() + outage_seconds()
                if time.monotonic() > deadline:
                    raise
                log.warning("%s: the connection was lost mid-statement; running it again", method.__name__)

    return run


def retry_cut_statements(cls, names: tuple[str, ...]):
    """Wrap each of `names` (public methods of dagster's storages) with retried_when_cut. A name this
    Dagster lacks is reported, not fatal: that method's statements are then not run again after a cut."""
    for name in names:
        method = getattr(cls, name, None)
        if method is None:
            warnings.warn(f"taxi_storage: {cls.__name__} has no {name}; its statements are not retried", stacklevel=2)
            continue
        setattr(cls, name, retried_when_cut(method))
    return cls


class _ReusedConnections:
    """Mixin for a dagster-postgres storage: its engine keeps a connection (see the module's 1.) and
    waits out outages (3.)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        outage_seconds()  # a bad DAGSTER_PG_OUTAGE_SECONDS fails here, naming it
        self.pg_token_provider = token_provider
        # dagster-postgres' constructor looks for its tables on an engine of its own, with its own
        # short retries: a process starting during an outage waits for the server first.
        probe = wait_out_outages(create_pg_engine(postgres_url, token_provider, poolclass=sqlalchemy.pool.NullPool))
        try:
            probe.connect().close()
        finally:
            probe.dispose()
        super().__init__(
            postgres_url=postgres_url,
            should_autocreate_tables=should_autocreate_tables,
            inst_data=inst_data,
            token_provider=token_provider,
        )
        # The storage's own engine (NullPool, used above to create the tables) replaced by one that
        # keeps a connection (kept as it is, a connection per statement, if dagster-postgres moved it).
        self._set_engine(pooled_engine(postgres_url, token_provider))

    def _set_engine(self, engine: sqlalchemy.engine.Engine) -> bool:
        old = storage_engine(self)
        if not replace_storage_engine(self, engine):
            engine.dispose()
            return False
        old.dispose()
        # Closed with the storage: the instance disposes the run and event log storages, not the
        # schedule storage, and an engine is freed only when Python collects cycles.
        weakref.finalize(self, engine.dispose)
        return True

    def dispose(self) -> None:
        super().dispose()
        engine = storage_engine(self)
        if engine is not None:
            engine.dispose()

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        """As dagster-postgres' (one kept connection, a statement timeout), with the pre-ping and the
        outage wait: without the pre-ping, the first request after a PostgreSQL restart failed
        with HTTP 500 on the dead kept connection."""
        current = storage_engine(self)
        if current is None:  # dagster-postgres moved its engine: its own webserver engines
            return super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        options = current.url.query.get("options")
        engine = pooled_engine(
            self.postgres_url,
            self.pg_token_provider,
            # the webserver's default is 3600 s: kept to POOL_RECYCLE_SECONDS, as the other engines
            pool_recycle=min(pool_recycle, POOL_RECYCLE_SECONDS) if pool_recycle > 0 else POOL_RECYCLE_SECONDS,
            max_overflow=max_overflow,
            **({"connect_args": {"options": options}} if options else {}),
        )
        sqlalchemy.event.listen(engine, "connect", lambda conn, _: set_pg_statement_timeout(conn, statement_timeout))
        self._set_engine(engine)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


# Methods whose statements are run again after a cut: each can run twice with the same outcome.
# Every read (public methods named get_*, fetch_*, has_*, all_*: the daemon's backfill loop lost one
# of its 5 retries to a cut read), and these writes (updates, upserts, claims). Not add_run,
# add_backfill, create_tick (inserts: a second one would be a duplicate); store_event below.
READ_PREFIXES = ("get_", "fetch_", "has_", "all_")
RETRIED = {
    "run": (
        "handle_run_event",
        "add_run_tags",
        "add_daemon_heartbeat",
        "update_backfill",
        "set_cursor_values",
    ),
    "event_log": (
        "claim_concurrency_slot",
        "check_concurrency_claim",
        "free_concurrency_slot_for_step",
        "free_concurrency_slots_for_run",
    ),
    "schedule": (
        "update_instigator_state",
        "update_tick",
    ),
}


def read_methods(cls) -> tuple[str, ...]:
    """The public reads of a storage class (plain functions named with READ_PREFIXES)."""
    return tuple(
        name
        for name in dir(cls)
        if name.startswith(READ_PREFIXES) and inspect.isfunction(inspect.getattr_static(cls, name))
    )


class PooledPostgresRunStorage(_ReusedConnections, PostgresRunStorage):
    """PostgresRunStorage reusing its connections and waiting out outages."""


class PooledPostgresScheduleStorage(_ReusedConnections, PostgresScheduleStorage):
    """PostgresScheduleStorage reusing its connections and waiting out outages."""


class PooledPostgresEventLogStorage(_ReusedConnections, PostgresEventLogStorage):
    """PostgresEventLogStorage reusing its connections, whose blocked pool claims are retried soon,
    and whose event writes survive a cut connection without writing an event twice."""

    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        """Dagster's claim; a blocked one says when to ask again (CLAIM_INTERVAL in dagster_internals)."""
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        return status if status.is_claimed else with_claim_retry(status, POOL_CLAIM_RETRY_SECONDS)

    def store_event(self, event) -> None:
        """dagster-postgres' store_event: the event's row, then (asset events) the asset index in a
        transaction. Cut in flight, the row may have landed or not: look it up, write it if it is
        missing, and finish the index if it is there."""
        try:
            return super().store_event(event)
        except sqlalchemy.exc.DBAPIError as error:
            if not cut_in_flight(error) or asset_event_kinds() is None:
                raise  # (without Dagster's event kinds, the write fails as dagster-postgres' does)
            first = error
        deadline = time.monotonic() + outage_seconds()
        while True:
            log.warning("store_event: the connection was lost mid-write; checking whether the event was stored")
            try:
                event_id = self.stored_event_id(event)
                if event_id is None:
                    return super().store_event(event)
                return self._finish_stored_event(event, event_id)
            except sqlalchemy.exc.DBAPIError as error:
                if not cut_in_flight(error) or time.monotonic() > deadline:
                    raise error from first

    def stored_event_id(self, event) -> int | None:
        """The id of `event`'s row if it is stored (its run and its serialized body), else None."""
        with self.index_connection() as conn:
            row = conn.execute(
                sqlalchemy.text("SELECT id FROM event_logs WHERE run_id = :run_id AND event = :body"),
                {"run_id": event.run_id, "body": serialize_value(event)},
            ).fetchone()
        return None if row is None else int(row[0])

    def _finish_stored_event(self, event, event_id: int) -> None:
        """What store_event does after the row, for a row already stored: the asset index (its tags
        unless stored, then the asset's entry, an upsert) and an asset check's execution row."""
        asset_events, asset_check_events = asset_event_kinds()
        dagster_event = event.dagster_event if event.is_dagster_event else None
        if dagster_event and event.dagster_event_type in asset_events and dagster_event.asset_key:
            write_tags = asset_event_tags_writer(self)
            with self.index_transaction() as conn:
                tagged = conn.execute(
                    sqlalchemy.text("SELECT 1 FROM asset_event_tags WHERE event_id = :id LIMIT 1"), {"id": event_id}
                ).fetchone()
                if write_tags is not None and not tagged:  # without it: one warning, the tags not indexed
                    write_tags(conn, [event], [event_id])
            self.store_asset_event(event, event_id)
        if dagster_event and event.dagster_event_type in asset_check_events:
            with self.index_connection() as conn:
                stored = conn.execute(
                    sqlalchemy.text("SELECT 1 FROM asset_check_executions WHERE evaluation_event_storage_id = :id"),
                    {"id": event_id},
                ).fetchone()
            if not stored:
                self.store_asset_check_event(event, event_id)


# 4. What the schema holds is asked once. Dagster's storages ask PostgreSQL's catalog whether a table
# or column exists (SQLAlchemy's `inspect(conn).get_table_names()` / `get_columns()`) on nearly every
# call: the run queue's look every second, the backfill loop's every 3 s, each sensor and automation
# tick reading and writing its state: about a third of the daemon's work at rest
# (docs/performance.md#from-a-backfill-to-the-chart). Tables, columns and index migrations are only
# ever added (`dagster instance migrate`), so a yes is remembered for the life of the storage; a no
# is asked again. Dagster's own names, by storage; one this Dagster lacks is reported, not fatal.
for _cls, _kind in (
    (PooledPostgresRunStorage, "run"),
    (PooledPostgresEventLogStorage, "event_log"),
    (PooledPostgresScheduleStorage, "schedule"),
):
    remember_schema_answers(_cls, _kind)  # SCHEMA_CACHE in taxi_assets/dagster_internals.py
    retry_cut_statements(_cls, RETRIED[_kind] + read_methods(_cls))

if create_pg_engine is None:  # another dagster-postgres: its own storages, as they ship
    PooledPostgresRunStorage = PostgresRunStorage  # noqa: F811
    PooledPostgresEventLogStorage = PostgresEventLogStorage  # noqa: F811
    PooledPostgresScheduleStorage = PostgresScheduleStorage  # noqa: F811
