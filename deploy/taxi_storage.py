"""The instance's PostgreSQL storages (dagster-postgres'), with two changes for backfills of many
small partitions. deploy/dagster.yaml names them; `make serve` and `make worker` put deploy/ on
PYTHONPATH. They take dagster-postgres' settings (`postgres_url` or `postgres_db`).

1. Connections are reused inside a process. dagster-postgres opens a new connection for every
   statement (SQLAlchemy's NullPool) so that an instance never holds connections it is not using. A
   run writes about 60 events, most through two or three statements, so one small partition's run
   opened about 270 connections, each a PostgreSQL backend forked and authenticated (dagster #20325;
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

Figures: docs/performance.md#backfills.
"""

from __future__ import annotations

import weakref

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

# A kept connection is replaced after this long: under the idle cut-offs in front of many servers
# (PgBouncer's server_idle_timeout is 600 s), and checked before each use anyway.
POOL_RECYCLE_SECONDS = 300
# A blocked step's next claim: 4 a second per waiting step.
POOL_CLAIM_RETRY_SECONDS = 0.25


class _ReusedConnections:
    """Mixin for a dagster-postgres storage: its engine keeps a connection (see the module's 1.)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(
            postgres_url=postgres_url,
            should_autocreate_tables=should_autocreate_tables,
            inst_data=inst_data,
            token_provider=token_provider,
        )
        # The storage's own engine (NullPool, used above to create the tables) replaced by one that
        # keeps a connection; dagster-postgres reads `_engine` wherever it connects.
        self._engine = create_pg_engine(
            postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=-1,  # no limit: a thread never waits for another's connection
            pool_recycle=POOL_RECYCLE_SECONDS,
            pool_pre_ping=True,
        )
        # Closed with the storage: the instance disposes the run and event log storages, not the
        # schedule storage, and an engine is freed only when Python collects cycles.
        weakref.finalize(self, self._engine.dispose)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class PooledPostgresRunStorage(_ReusedConnections, PostgresRunStorage):
    """PostgresRunStorage reusing its connections."""


class PooledPostgresScheduleStorage(_ReusedConnections, PostgresScheduleStorage):
    """PostgresScheduleStorage reusing its connections."""


class PooledPostgresEventLogStorage(_ReusedConnections, PostgresEventLogStorage):
    """PostgresEventLogStorage reusing its connections, whose blocked pool claims are retried soon."""

    def claim_concurrency_slot(self, concurrency_key, run_id, step_key, priority=None):
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        return status if status.is_claimed else status.with_sleep_interval(POOL_CLAIM_RETRY_SECONDS)
