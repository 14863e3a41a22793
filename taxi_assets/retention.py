"""Retention: what the instance keeps grows with every run and tick; this removes what is old.

Once a day (`retention_schedule`, on from the start, 03:17 UTC by default: TAXI_RETENTION_CRON) the
`retention` job removes, once
older than TAXI_RETENTION_DAYS (30 by default):
- runs that hold no partition's latest materialization or observation of any asset, and no latest
  check evaluation, with their events and their compute logs. A run that holds one is kept: the
  grid, the sensor's fingerprints (run_history.py) and the UI read those events, and a deleted run
  deletes its events;
- the compute logs of every run (kept runs keep their events; their stdout and stderr go);
- sensor and schedule ticks, but each one's latest tick (its place in time).
Runs not finished, and those of a backfill still going, are never touched. What it removed is
logged in its run's log. It runs where runs run, on the instance the run sees: with Celery, the
compute logs removed are those of the worker that ran it.
"""

import datetime as dt
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from taxi_assets import settings
from taxi_assets.compute_logs import COMPUTE_LOGS, compute_log_root, run_log_folder

PAGE = 1000  # records per storage query: bounded memory per page, few round trips
EVALUATED = ("SUCCEEDED", "FAILED")  # check record statuses of an evaluation (not PLANNED)
GOING = ("REQUESTED", "CANCELING", "FAILING")  # backfill statuses before its end
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass
class Removed:
    """What one retention run removed, and the old runs it kept."""

    runs: list[str] = field(default_factory=list)
    kept_runs: int = 0  # old runs kept because they hold a latest materialization or check
    compute_log_folders: int = 0
    compute_log_bytes: int = 0
    ticks: dict[str, int] = field(default_factory=dict)  # instigator name -> ticks removed

    def summary(self, cutoff: dt.datetime) -> str:
        """One line for the run's log: what was removed, older than `cutoff`."""
        return (
            f"older than {cutoff:%Y-%m-%d %H:%M:%S} UTC: removed {len(self.runs)} runs (kept {self.kept_runs} "
            f"that hold a partition's latest materialization or check), the compute logs of "
            f"{self.compute_log_folders} runs ({self.compute_log_bytes:,} bytes), "
            f"{sum(self.ticks.values())} sensor and schedule ticks"
        )


def _latest_asset_event_runs(instance: dg.DagsterInstance) -> set[str]:
    """Runs holding the latest materialization or observation of some asset partition (or of an
    unpartitioned asset)."""
    holders: set[str] = set()
    for asset_key in instance.get_asset_keys():
        for fetch in (instance.fetch_materializations, instance.fetch_observations):
            seen: set[str | None] = set()
            cursor = None
            while True:
                page = fetch(dg.AssetRecordsFilter(asset_key=asset_key), limit=PAGE, cursor=cursor, ascending=False)
                for record in page.records:  # newest first: the first one per partition is its latest
                    if record.partition_key not in seen:
                        seen.add(record.partition_key)
                        holders.add(record.run_id)
                if not page.has_more:
                    break
                cursor = page.cursor
    return holders


def _latest_check_runs(instance: dg.DagsterInstance, check_keys) -> set[str]:
    """Runs holding the latest evaluation of some asset check, per partition (a check planned by a
    run that failed before it is no evaluation)."""
    holders: set[str] = set()
    storage = instance.event_log_storage
    for check_key in check_keys:
        seen: set[str | None] = set()
        cursor = None
        while True:
            records = storage.get_asset_check_execution_history(check_key, limit=PAGE, cursor=cursor)
            for record in records:  # newest first
                if record.status.value in EVALUATED and record.partition not in seen:
                    seen.add(record.partition)
                    holders.add(record.run_id)
            if len(records) < PAGE:
                break
            cursor = records[-1].id
    return holders


def _finished_before(instance: dg.DagsterInstance, cutoff: dt.datetime) -> list[dg.RunRecord]:
    found: list[dg.RunRecord] = []
    cursor = None
    while True:
        page = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, updated_before=cutoff), limit=PAGE, cursor=cursor, ascending=True
        )
        found.extend(page)
        if len(page) < PAGE:
            return found
        cursor = page[-1].dagster_run.run_id


def _backfill_going(instance: dg.DagsterInstance, run: dg.DagsterRun, cache: dict[str, bool]) -> bool:
    backfill_id = run.tags.get("dagster/backfill")
    if not backfill_id:
        return False
    if backfill_id not in cache:
        backfill = instance.get_backfill(backfill_id)
        cache[backfill_id] = backfill is not None and backfill.status.value in GOING
    return cache[backfill_id]


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _is_run_id(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def _remove_compute_logs(instance: dg.DagsterInstance, run_id: str, removed: Removed) -> None:
    folder = run_log_folder(instance, run_id)
    if folder is None:  # kept elsewhere (cloud storage): the manager removes them
        instance.compute_log_manager.delete_logs(prefix=[run_id, COMPUTE_LOGS])
        return
    if not folder.is_dir():
        return
    removed.compute_log_bytes += _folder_bytes(folder)
    removed.compute_log_folders += 1
    instance.compute_log_manager.delete_logs(prefix=[run_id, COMPUTE_LOGS])
    try:
        folder.parent.rmdir()  # {run_id}/, when nothing else is in it
    except OSError:
        pass


def _orphan_compute_logs(instance: dg.DagsterInstance, cutoff: dt.datetime) -> list[str]:
    """Runs whose compute-log folder is older than the cutoff and whose run is gone (deleted
    elsewhere): nothing else would ever remove those files."""
    root = compute_log_root(instance)
    if root is None or not root.is_dir():
        return []
    orphans = []
    for folder in root.iterdir():
        logs = folder / COMPUTE_LOGS
        if not _is_run_id(folder.name) or not logs.is_dir():
            continue
        if logs.stat().st_mtime < cutoff.timestamp() and instance.get_run_record_by_id(folder.name) is None:
            orphans.append(folder.name)
    return orphans


def _remove_ticks(instance: dg.DagsterInstance, cutoff: dt.datetime, removed: Removed) -> None:
    for state in instance.all_instigator_state():
        origin, selector = state.instigator_origin_id, state.selector_id
        latest = instance.get_ticks(origin, selector, limit=1)
        if not latest:
            continue
        # Each instigator's latest tick stays whatever its age: it is where the daemon resumes.
        before = min(cutoff.timestamp(), latest[0].timestamp)
        count = len(instance.get_ticks(origin, selector, before=before))
        if count:
            instance.purge_ticks(origin, selector, before=before)
            removed.ticks[state.instigator_name] = removed.ticks.get(state.instigator_name, 0) + count


def apply_retention(instance: dg.DagsterInstance, cutoff: dt.datetime, check_keys=(), log=None) -> Removed:
    """Remove from `instance` what is older than `cutoff` (see the module's docstring)."""
    removed = Removed()
    old = _finished_before(instance, cutoff)
    holders = _latest_asset_event_runs(instance) | _latest_check_runs(instance, check_keys)
    backfills: dict[str, bool] = {}
    for record in old:
        run = record.dagster_run
        if run.run_id in holders:
            removed.kept_runs += 1
        elif not _backfill_going(instance, run, backfills):
            instance.delete_run(run.run_id)
            removed.runs.append(f"{run.run_id} ({run.job_name}, {run.status.value})")
    if log is not None:
        for start in range(0, len(removed.runs), 50):
            log.info("removed runs: " + ", ".join(removed.runs[start : start + 50]))
    for run_id in [record.dagster_run.run_id for record in old] + _orphan_compute_logs(instance, cutoff):
        _remove_compute_logs(instance, run_id, removed)
    _remove_ticks(instance, cutoff, removed)
    return removed


class RetentionConfig(dg.Config):
    """Run config of the retention job: the age limit, and the moment it is counted from."""

    retention_days: float | None = None  # default: TAXI_RETENTION_DAYS, read when the run starts
    as_of: str | None = None  # ISO time the age is counted from; default: now


def _remove_old_history(context: dg.OpExecutionContext, config: RetentionConfig, check_keys) -> None:
    days = settings.retention_days() if config.retention_days is None else config.retention_days
    now = dt.datetime.fromisoformat(config.as_of) if config.as_of else dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    cutoff = now - dt.timedelta(days=days)
    removed = apply_retention(context.instance, cutoff, check_keys, log=context.log)
    for name, count in sorted(removed.ticks.items()):
        context.log.info(f"removed {count} ticks of {name}")
    context.log.info(removed.summary(cutoff))
    root = compute_log_root(context.instance)
    if root is not None:
        context.log.info(f"compute logs: {_usage(root)}")


def _usage(root: Path) -> str:
    total = shutil.disk_usage(root)
    return f"{total.free:,} bytes free of {total.total:,} in {root}"


def retention_definitions(check_keys: Iterable[dg.AssetCheckKey], cron: str) -> dg.Definitions:
    """The `retention` job and its schedule (on `cron`), for a code location whose asset checks are
    `check_keys` (a run holding one's latest evaluation is kept); `build_defs` merges them in."""
    keys = sorted(check_keys, key=str)

    @dg.op(description="Removes runs, compute logs and ticks older than the retention; keeps what partitions hold.")
    def remove_old_history(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
        """The retention job's one op: remove what is older than the retention."""
        _remove_old_history(context, config, keys)

    # In process without the code location's look at free space: it must run when the disk is
    # full, since it is what frees it.
    @dg.job(
        name="retention",
        executor_def=dg.in_process_executor,
        description="Removes runs, compute logs and ticks older than TAXI_RETENTION_DAYS (default 30); "
        "a run holding a partition's latest materialization or check is kept.",
    )
    def retention_job():
        """Remove old runs, compute logs and ticks."""
        remove_old_history()

    schedule = dg.ScheduleDefinition(
        name="retention_schedule",
        job=retention_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The retention job (TAXI_RETENTION_DAYS), on {cron} UTC (TAXI_RETENTION_CRON).",
    )
    return dg.Definitions(jobs=[retention_job], schedules=[schedule])
