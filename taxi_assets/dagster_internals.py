"""Every private name of Dagster's, dagster-postgres' and dagster-celery's that this project uses, in
one place: the code location's (here) and deploy/'s (deploy/taxi_storage.py, deploy/taxi_celery.py,
deploy/serve.py take them from here). docs/decisions.md#dagsters-internals lists them with why, the
upstream issue or PR, and where each is applied.

Nothing here can stop the code location or a service from starting. Each private name is looked up
inside a function, never at import; one that moved or changed leaves Dagster's own behaviour in
place, with one warning per process (`InternalChanged`) naming it. Dagster is pinned below 1.14:
`taxi_assets_tests/test_dagster_internals.py` checks the shape of each one on the installed Dagster
and, for each Dagster bug worked around, that the bug is still there (a Dagster that fixes one fails
that test, saying which patch to delete); `make test-dagster DAGSTER_VERSIONS=...` runs it, and the
fast suite, on other Dagster versions.

The internals:

- POOL_WAIT: `InstanceConcurrencyContext.interval_to_next_pending_claim_check` replaced (a step
  waiting for a pool slot busy-waits), `sleep_while_waiting_for_pool_slots`.
- BACKFILL_INTERVAL: `BackfillDaemon.core_loop` wrapped so that the backfill loop alone reads
  `controller.DEFAULT_DAEMON_INTERVAL_SECONDS` as another value, `set_backfill_interval`.
- POSTGRES_ENGINE: dagster-postgres' storages' `_engine`, replaced by a pooled one
  (`storage_engine`, `replace_storage_engine`), deploy/taxi_storage.py.
- CLAIM_INTERVAL: a blocked pool claim's result given a retry interval
  (`ConcurrencyClaimStatus.with_sleep_interval`, `with_claim_retry`), deploy/taxi_storage.py.
- EVENT_WRITE: `dagster._core.events.ASSET_EVENTS` / `ASSET_CHECK_EVENTS` and
  `SqlEventLogStorage._store_asset_event_tags`, to finish an event write cut in flight
  (`asset_event_kinds`, `asset_event_tags_writer`), deploy/taxi_storage.py.
- GRID_TAGS: a materialization's `EventLogEntry` rebuilt with `_replace` (NamedTuples) and indexed
  by the storage's `store_asset_event_tags` (`tagged_entry`, `tag_index_writer`), grid_upkeep.py.
- CELERY: `dagster._core.events`, `dagster._core.launcher`, `dagster._grpc.types`,
  `dagster._serdes.unpack_value` and dagster-celery's task bodies (`dagster_celery.tasks`),
  `celery_internals`, deploy/taxi_celery.py and deploy/lost_tasks.py.
- SCHEMA_CACHE: dagster-postgres' storages' yes/no questions about their own schema (some private,
  `SCHEMA_QUESTIONS`), answered from memory once yes (`remember_schema_answers`),
  deploy/taxi_storage.py.
- RUN_ORIGIN: `dagster._core.remote_origin` and `LoadableTargetOrigin`, to give the demo's
  in-process runs their code location (`remote_job_origin`), taxi_assets/demo.py.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

POOL_WAIT = "POOL_WAIT (InstanceConcurrencyContext.interval_to_next_pending_claim_check)"
BACKFILL_INTERVAL = "BACKFILL_INTERVAL (BackfillDaemon.core_loop, controller.DEFAULT_DAEMON_INTERVAL_SECONDS)"
POSTGRES_ENGINE = "POSTGRES_ENGINE (dagster-postgres storages' _engine)"
CLAIM_INTERVAL = "CLAIM_INTERVAL (ConcurrencyClaimStatus.with_sleep_interval)"
EVENT_WRITE = "EVENT_WRITE (dagster._core.events.ASSET_EVENTS, SqlEventLogStorage._store_asset_event_tags)"
GRID_TAGS = "GRID_TAGS (EventLogEntry._replace, SqlEventLogStorage.store_asset_event_tags)"
CELERY = "CELERY (dagster._core.events, dagster._core.launcher, dagster._grpc.types, dagster_celery.tasks)"
SCHEMA_CACHE = "SCHEMA_CACHE (dagster-postgres storages' has_* schema questions)"
RUN_ORIGIN = "RUN_ORIGIN (dagster._core.remote_origin, DagsterInstance.create_run_for_job's remote_job_origin)"

DOCS = "docs/decisions.md#dagsters-internals"


class InternalChanged(UserWarning):
    """A private name of Dagster's that this project uses moved or changed: Dagster's own behaviour is kept."""


_warned: set[str] = set()


def changed(internal: str, what: object) -> None:
    """Warn, once per process, that `internal` is not usable with the installed Dagster."""
    if internal in _warned:
        return
    _warned.add(internal)
    from dagster.version import __version__

    warnings.warn(
        f"taxi_assets: {internal} changed in dagster {__version__} ({what}); Dagster's own behaviour is kept "
        f"(see {DOCS})",
        InternalChanged,
        stacklevel=3,
    )


# --- POOL_WAIT ------------------------------------------------------------------------------------
# A step waiting for a slot of its pool (`upstream`, `warehouse`) should sleep until its next claim.
# In Dagster 1.13 the method returns `min(0, ...)`, never more than 0, so the run's executor loops
# without sleeping: each waiting run takes a whole core (dagster PR #20367 found this and was closed
# unmerged). The replacement returns the time until the next claim, not below 0. It is made only
# while the installed Dagster still has the bug, tried on a stand-in (not by version number).

_dagster_methods: dict[str, Callable] = {}


def concurrency_context() -> type:
    """Dagster's InstanceConcurrencyContext (a run's pool claims)."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    return InstanceConcurrencyContext


def until_next_claim(self) -> float:
    """The replacement: seconds until the next pending claim is due, not below 0."""
    timeouts = self._pending_timeouts
    if not self.has_pending_claims() or not timeouts:
        return 0.0
    return max(0.0, min(timeouts.values()) - time.time())


until_next_claim.fixes_busy_wait = True


def dagster_pool_wait() -> Callable:
    """Dagster's own `interval_to_next_pending_claim_check` (before any replacement here)."""
    return _dagster_methods.get(POOL_WAIT) or concurrency_context().interval_to_next_pending_claim_check


def pool_wait_busy_waits(method: Callable | None = None) -> bool:
    """Whether `method` (Dagster's own by default) says "check now" for a claim due in a minute: the bug."""
    due_in_a_minute = SimpleNamespace(
        _pending_claims={"step"}, _pending_timeouts={"step": time.time() + 60}, has_pending_claims=lambda: True
    )
    return (method or dagster_pool_wait())(due_in_a_minute) <= 0


def sleep_while_waiting_for_pool_slots() -> bool:
    """Replace the method if it busy-waits; whether the replacement is in place. A Dagster whose
    method is gone or no longer works on the stand-in keeps its own, with one warning."""
    try:
        cls = concurrency_context()
        current = cls.interval_to_next_pending_claim_check
        if getattr(current, "fixes_busy_wait", False):
            return True
        if not pool_wait_busy_waits(current):
            return False  # fixed upstream: test_dagster_internals.py says to delete this patch
    except Exception as exc:  # noqa: BLE001 - any change in Dagster's module or method
        changed(POOL_WAIT, repr(exc))
        return False
    _dagster_methods[POOL_WAIT] = current
    cls.interval_to_next_pending_claim_check = until_next_claim
    return True


# --- BACKFILL_INTERVAL ----------------------------------------------------------------------------
# The daemon's backfill loop looks at backfills every DEFAULT_DAEMON_INTERVAL_SECONDS (30 s), with no
# instance setting, so a new backfill's first runs were created up to 30 s after its launch (dagster
# issue #11649, open; PR #11860, a shorter interval while backfills are active, open since 2023). The same
# constant is the legacy asset daemon's interval (read when the daemon controller creates it), so it
# is not replaced for the process: the backfill loop reads it once, before its first iteration
# (`from dagster._daemon.controller import DEFAULT_DAEMON_INTERVAL_SECONDS`), and the wrapper sets it
# for that moment only, after every daemon has been created.


def _daemon_modules() -> tuple[Any, type]:
    from dagster._daemon import controller
    from dagster._daemon.daemon import BackfillDaemon

    return controller, BackfillDaemon


def backfill_daemon() -> type:
    """Dagster's BackfillDaemon class (for the upgrade test)."""
    return _daemon_modules()[1]


def daemon_interval_seconds() -> float:
    """Dagster's DEFAULT_DAEMON_INTERVAL_SECONDS as every daemon but the backfill loop sees it."""
    return _daemon_modules()[0].DEFAULT_DAEMON_INTERVAL_SECONDS


def backfill_settings_keys() -> set[str]:
    """The keys of the instance's `backfills:` settings (none sets the loop's interval in 1.13)."""
    from dagster._core.instance.config import backfills_daemon_config

    return set(backfills_daemon_config().config_type.fields)


def set_backfill_interval(seconds: float) -> bool:
    """Make the daemon's backfill loop run every `seconds`, every other daemon as Dagster ships it.
    Call in the daemon's process before it starts (deploy/serve.py's daemon script). Whether it is
    in place; a Dagster without these names keeps its own interval, with one warning."""
    try:
        controller, daemon = _daemon_modules()
        default = controller.DEFAULT_DAEMON_INTERVAL_SECONDS
        dagster_loop = daemon.core_loop
    except (ImportError, AttributeError) as exc:
        changed(BACKFILL_INTERVAL, repr(exc))
        return False
    dagster_loop = getattr(dagster_loop, "dagster_core_loop", dagster_loop)

    @functools.wraps(dagster_loop)
    def core_loop(self, workspace_process_context, shutdown_event):
        loop = dagster_loop(self, workspace_process_context, shutdown_event)
        controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds
        try:
            first = next(loop)  # the loop has read the constant
        except StopIteration:
            return
        finally:
            controller.DEFAULT_DAEMON_INTERVAL_SECONDS = default
        yield first
        yield from loop

    core_loop.dagster_core_loop = dagster_loop
    daemon.core_loop = core_loop
    return True


# --- POSTGRES_ENGINE ------------------------------------------------------------------------------
# dagster-postgres' storages open a connection per statement (SQLAlchemy's NullPool; dagster #20325,
# no setting for it: #33935, PR #33936 open). deploy/taxi_storage.py replaces each storage's engine,
# which the storages read from `_engine` wherever they connect.

ENGINE_ATTRIBUTE = "_engine"


def storage_engine(storage) -> Any | None:
    """A dagster-postgres storage's SQLAlchemy engine, or None (one warning) when it has moved."""
    engine = getattr(storage, ENGINE_ATTRIBUTE, None)
    if engine is None:
        changed(POSTGRES_ENGINE, f"{type(storage).__name__} has no {ENGINE_ATTRIBUTE}")
    return engine


def replace_storage_engine(storage, engine) -> bool:
    """Give `storage` another engine; False (one warning) when it no longer reads one from ENGINE_ATTRIBUTE."""
    if storage_engine(storage) is None:
        return False
    setattr(storage, ENGINE_ATTRIBUTE, engine)
    return True


def reads_engine_attribute(cls: type) -> bool:
    """Whether `cls.__init__` sets ENGINE_ATTRIBUTE (the shape the replacement relies on)."""
    return ENGINE_ATTRIBUTE in cls.__init__.__code__.co_names


def postgres_setting_names() -> set[str]:
    """dagster-postgres' storage settings, with those of `postgres_db` (none sets a pool in 0.29)."""
    from dagster_postgres.utils import pg_config

    config = pg_config()
    names = set(config)
    names |= {f"postgres_db.{name}" for name in config["postgres_db"].config_type.fields}
    return names


# --- CLAIM_INTERVAL -------------------------------------------------------------------------------
# A step waiting for a pool slot claims again after the interval its storage returns with the
# blocked claim, else after Dagster's 1 s growing to 15 s. deploy/taxi_storage.py returns a short one
# (as Dagster's own test storage does) through the claim result's `with_sleep_interval`.


def with_claim_retry(status, seconds: float):
    """A blocked claim's result, to be claimed again after `seconds`; as it is (one warning) when the
    result has no `with_sleep_interval`."""
    method = getattr(status, "with_sleep_interval", None)
    if method is None:
        changed(CLAIM_INTERVAL, f"{type(status).__name__} has no with_sleep_interval")
        return status
    return method(seconds)


# --- EVENT_WRITE ----------------------------------------------------------------------------------
# An event write cut in flight (PostgreSQL restarting under it) may have landed or not:
# deploy/taxi_storage.py looks it up and finishes what dagster-postgres' store_event does after the
# row (the asset index, its tags), which needs Dagster's own sets of asset event types and its
# tag writer on an open connection. dagster-postgres gives up after 5 retries (dagster #3812 and
# #33886 open; configurable retries, #21209, closed unanswered).


def asset_event_kinds() -> tuple[Any, Any] | None:
    """Dagster's ASSET_EVENTS and ASSET_CHECK_EVENTS, or None (one warning)."""
    try:
        from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
    except ImportError as exc:
        changed(EVENT_WRITE, repr(exc))
        return None
    return ASSET_EVENTS, ASSET_CHECK_EVENTS


def asset_event_tags_writer(storage) -> Callable | None:
    """The storage's `_store_asset_event_tags(conn, events, event_ids)`, or None (one warning)."""
    writer = getattr(storage, "_store_asset_event_tags", None)
    if writer is None:
        changed(EVENT_WRITE, f"{type(storage).__name__} has no _store_asset_event_tags")
    return writer


# --- GRID_TAGS ------------------------------------------------------------------------------------
# Materializations recorded when the tlc grid was a list of keys lack the per-dimension tags that
# Dagster reads multi-partition status from when its storage has no status cache. grid_upkeep.py
# indexes those tags for each: the entry rebuilt as if its materialization had carried them
# (EventLogEntry, DagsterEvent and StepMaterializationData are NamedTuples) and passed to the
# storage's tag index writer. No upstream issue: a one-off migration of this project's history.


def tag_index_writer(storage) -> Callable | None:
    """The storage's `store_asset_event_tags(entries, event_ids)`, or None (one warning)."""
    writer = getattr(storage, "store_asset_event_tags", None)
    if writer is None:
        changed(GRID_TAGS, f"{type(storage).__name__} has no store_asset_event_tags")
    return writer


def tagged_entry(entry, tags: dict[str, str]):
    """`entry` (a materialization's EventLogEntry) as if its materialization had carried `tags`."""
    import dagster as dg

    data = entry.dagster_event.event_specific_data
    old = data.materialization
    tagged = data._replace(
        materialization=dg.AssetMaterialization(asset_key=old.asset_key, partition=old.partition, tags=tags)
    )
    return entry._replace(dagster_event=entry.dagster_event._replace(event_specific_data=tagged))


# --- CELERY ---------------------------------------------------------------------------------------
# deploy/taxi_celery.py: the launcher's health check asks the worker (CheckRunHealthResult,
# WorkerStatus), a task is admitted after reading its run id (unpack_value, ExecuteRunArgs,
# ResumeRunArgs) and records its worker (EngineEventData), then runs dagster-celery's task body
# (create_execute_job_task, create_resume_job_task); deploy/lost_tasks.py fails a run whose task was
# lost as run monitoring would (JobFailureData, RunFailureReason). dagster-celery's resume task
# expects `resume_job_args_packed` where its launcher sends `execute_job_args_packed`: the resume
# task here takes either (no upstream issue found; the launcher itself is undocumented: dagster #32915).


@functools.cache
def celery_internals() -> SimpleNamespace | None:
    """The private names deploy/taxi_celery.py uses, or None (one warning): its launcher, tasks and
    the lost-task watchdog then behave as dagster-celery's own."""
    try:
        from dagster._core.events import EngineEventData, JobFailureData, RunFailureReason
        from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
        from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
        from dagster._serdes import unpack_value
        from dagster_celery.config import TASK_EXECUTE_JOB_NAME, TASK_RESUME_JOB_NAME
        from dagster_celery.tasks import create_execute_job_task, create_resume_job_task
    except ImportError as exc:
        changed(CELERY, repr(exc))
        return None
    return SimpleNamespace(
        EngineEventData=EngineEventData,
        JobFailureData=JobFailureData,
        RunFailureReason=RunFailureReason,
        CheckRunHealthResult=CheckRunHealthResult,
        WorkerStatus=WorkerStatus,
        ExecuteRunArgs=ExecuteRunArgs,
        ResumeRunArgs=ResumeRunArgs,
        unpack_value=unpack_value,
        TASK_EXECUTE_JOB_NAME=TASK_EXECUTE_JOB_NAME,
        TASK_RESUME_JOB_NAME=TASK_RESUME_JOB_NAME,
        create_execute_job_task=create_execute_job_task,
        create_resume_job_task=create_resume_job_task,
    )


def add_dagster_celery_tasks(app) -> bool:
    """dagster-celery's own execute and resume tasks on `app`, as its app module makes them: the
    workers' tasks when CELERY changed. False when even those moved (the worker then takes no run)."""
    try:
        from dagster_celery.tasks import create_execute_job_task, create_resume_job_task
    except ImportError:
        return False
    create_execute_job_task(app)
    create_resume_job_task(app)
    return True


# --- SCHEMA_CACHE ---------------------------------------------------------------------------------
# dagster-postgres' storages ask PostgreSQL's catalog whether a table, column or index migration
# exists (SQLAlchemy's inspector) on nearly every call: the run queue, the backfill loop and each
# instigator read, every second at rest. Nothing removes a table or column once a migration added
# it (`dagster instance migrate`), so a yes is remembered for the storage's life; a no is asked
# again. Dagster's own method names, by storage; one this Dagster lacks is warned of once, not fatal.

SCHEMA_QUESTIONS = {
    "run": (
        "has_run_stats_index_cols",
        "has_bulk_actions_selector_cols",
        "has_backfill_id_column",
        "has_bulk_action_job_name_column",
        "has_backfill_tags_table",
    ),
    "event_log": ("has_table", "has_asset_key_col", "_has_asset_key_col_on_connection"),
    "schedule": (
        "has_instigators_table",
        "_has_instigators_table",
        "_has_asset_daemon_asset_evaluations_table",
        "has_secondary_index_table",
        "has_built_index",
    ),
}


def remembering_yes(method: Callable) -> Callable:
    """`method` (a yes/no question about the schema) asked once its answer is yes; by its text
    arguments (a table, column or migration name), whatever connection it was asked on."""

    @functools.wraps(method)
    def ask(self, *args):
        key = (method.__name__, *(arg for arg in args if isinstance(arg, str)))
        seen = self.__dict__.setdefault("_taxi_schema_seen", set())
        if key in seen:
            return True
        answer = method(self, *args)
        if answer is True:
            seen.add(key)
        return answer

    ask.remembers_yes = True
    return ask


def remember_schema_answers(cls: type, kind: str) -> int:
    """Wrap `cls`'s schema questions of storage `kind` ("run", "event_log", "schedule"); how many."""
    wrapped = 0
    for name in SCHEMA_QUESTIONS[kind]:
        method = getattr(cls, name, None)
        if method is None:
            changed(SCHEMA_CACHE, f"{cls.__name__} has no {name}; the catalog is asked each time")
        elif not getattr(method, "remembers_yes", False):
            setattr(cls, name, remembering_yes(method))
            wrapped += 1
    return wrapped


# --- RUN_ORIGIN -----------------------------------------------------------------------------------
# The UI's overview timeline leaves out every run without a code location (ui-core's
# useRunsForTimeline.tsx: `if (!run.repositoryOrigin) return`), and `execute_in_process` names none:
# after the demo the timeline was empty. Dagster has no public way to name it; the instance's
# `create_run_for_job` takes a `remote_job_origin`.


def remote_job_origin(module_name: str, location: str, repository: str, job_name: str, executable: str):
    """The origin a run of `job_name` launched from code location `location` (module `module_name`)
    records; None, with one warning, when this Dagster's names moved."""
    try:
        from dagster._core.remote_origin import (
            ManagedGrpcPythonEnvCodeLocationOrigin,
            RemoteJobOrigin,
            RemoteRepositoryOrigin,
        )
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        target = LoadableTargetOrigin(executable_path=executable, module_name=module_name)
        code_location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location)
        return RemoteJobOrigin(RemoteRepositoryOrigin(code_location, repository), job_name)
    except (ImportError, TypeError) as exc:
        changed(RUN_ORIGIN, repr(exc))
        return None
