"""The instance's PostgreSQL storages (dagster-postgres'), with two changes for backfills of many
small partitions. deploy/dagster.yaml names them; `make serve` and `make worker` put deploy/ on
PYTHONPATH. They take dagster-postgres' settings (`postgres_url` or `postgres_db`).

1. Connections are reused inside a process. dagster-postgres opens a new connection for every
   statement (SQLAlchemy's NullPool) so that an instance never holds connections it is not using. A
   run writes about 60 events, most through two or three statements, so one small partition's run
   opened about 270 connections, each a PostgreSQL backend forked and authenticated (dagster #20325;
   no setting for it: dagster #33935). Here each storage is pooled as Dagster pools it in its
   webserver (`optimize_for_webserver`): one connection kept and reused, more opened when threads
   need them at once and closed when they are done. A process holds at most three idle connections.
2. A step waiting for a pool slot (`warehouse`, `upstream`) asks again after POOL_CLAIM_RETRY_SECONDS,
   not after Dagster's 1 s growing to 15 s: a small partition's warehouse load takes a fraction of a
   second, and a slot left free for a second is a second the backfill loses per waiting run. Each
   retry is one short transaction on a kept connection. (The event log storage's claim result may
   carry this interval: `ConcurrencyClaimStatus.with_sleep_interval`, as Dagster's own test storage does.)

Figures: docs/performance.md#backfills.
"""

from __future__ import annotations

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# A kept connection is replaced after this long (the webserver's default, --db-pool-recycle), so
# that one held by a long-lived process does not outlive a server-side idle timeout.
POOL_RECYCLE_SECONDS = 3600
# No statement timeout (0), as dagster-postgres' own engines outside the webserver; no limit on
# connections opened beyond the kept one (-1): a thread never waits for another's connection.
NO_STATEMENT_TIMEOUT, UNLIMITED_OVERFLOW = 0, -1
# A blocked step's next claim: 4 a second per waiting step, a few short transactions a second.
POOL_CLAIM_RETRY_SECONDS = 0.25


class _ReusedConnections:
    """Mixin for a dagster-postgres storage: its engine keeps a connection (see the module's 1.)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimize_for_webserver(
            statement_timeout=NO_STATEMENT_TIMEOUT, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=UNLIMITED_OVERFLOW
        )

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
