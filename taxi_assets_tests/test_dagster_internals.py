"""The upgrade tests of Dagster's private names this project uses (taxi_assets/dagster_internals.py,
docs/decisions.md#dagsters-internals): for each, the shape relied on (names, signatures, what the
method returns on a stand-in) and, for each Dagster bug worked around, that the bug is still there,
so that a Dagster that fixes it fails here saying which patch to delete. And that a Dagster whose
internals moved still loads the code location and the Celery module, with one warning per internal.

Run against other Dagster versions with `make test-dagster DAGSTER_VERSIONS="..."` (docs/development.md).
These tests name Dagster's private names on purpose (issue 26), through the registry where it can."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from taxi_assets import dagster_internals as internals

ROOT = Path(__file__).resolve().parents[1]
DELETE = "Dagster fixed what {patch} works around: delete {patch} from taxi_assets/dagster_internals.py ({where})"


def test_no_private_dagster_name_outside_the_registry():
    """A private name of Dagster's (a `dagster._` module, dagster-celery's task factories, a storage's
    `_engine`) named anywhere in the code location or deploy/ but the registry fails here."""
    private = re.compile(
        r"dagster\._|dagster_celery\.tasks|_store_asset_event_tags|\"_engine\"|_pending_timeouts|\"_has_\w+\""
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("taxi_assets", "deploy")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "dagster_internals.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == [], "private Dagster names outside taxi_assets/dagster_internals.py:\n" + "\n".join(found)


def test_every_internal_is_listed_in_the_docs():
    section = (ROOT / "docs" / "decisions.md").read_text().split("## Dagster's internals", 1)[1].split("\n## ", 1)[0]
    names = [internals.POOL_WAIT, internals.BACKFILL_INTERVAL, internals.POSTGRES_ENGINE]
    names += [internals.CLAIM_INTERVAL, internals.EVENT_WRITE, internals.GRID_TAGS, internals.CELERY]
    names += [internals.SCHEMA_CACHE, internals.RUN_ORIGIN]
    for name in names:
        assert f"**{name.split()[0]}**" in section, name


# POOL_WAIT --------------------------------------------------------------------------------------


def test_pool_wait_shape():
    cls = internals.concurrency_context()
    method = internals.dagster_pool_wait()
    assert list(inspect.signature(method).parameters) == ["self"]
    # The replacement reads these on the real object (test_pool_wait.py runs it in a real run).
    assert "_pending_timeouts" in cls.__init__.__code__.co_names
    assert callable(cls.has_pending_claims)
    # What the replacement returns on the stand-in: the time until the claim due in a minute.
    due = SimpleNamespace(_pending_timeouts={"s": time.time() + 60}, has_pending_claims=lambda: True)
    assert 59 < internals.until_next_claim(due) <= 60
    assert not internals.pool_wait_busy_waits(internals.until_next_claim)


def test_pool_wait_bug_is_still_there():
    where = "sleep_while_waiting_for_pool_slots and its calls in definitions.py and deploy/taxi_celery.py"
    assert internals.pool_wait_busy_waits(), DELETE.format(patch="POOL_WAIT", where=where)


def test_pool_wait_is_replaced_where_the_code_location_loads():
    import taxi_assets.definitions  # noqa: F401 - the import makes the patch

    current = internals.concurrency_context().interval_to_next_pending_claim_check
    assert getattr(current, "fixes_busy_wait", False)


# BACKFILL_INTERVAL ------------------------------------------------------------------------------


def test_backfill_interval_shape_and_effect(monkeypatch):
    """The wrapped backfill loop, on an instance with no backfills, goes round every 0.2 s, while
    the constant every other daemon reads stays Dagster's 30 s."""
    daemon = internals.backfill_daemon()
    monkeypatch.setattr(daemon, "core_loop", daemon.core_loop)  # undone after the test
    parameters = list(inspect.signature(daemon.core_loop).parameters)
    assert parameters == ["self", "workspace_process_context", "shutdown_event"]
    assert internals.daemon_interval_seconds() == 30
    assert internals.set_backfill_interval(0.2)
    starts, seen = [], set()
    with dg.instance_for_test() as instance:
        loop = daemon(settings={"use_threads": False}).core_loop(SimpleNamespace(instance=instance), threading.Event())
        for item in loop:
            seen.add(internals.daemon_interval_seconds())
            if getattr(item, "name", None) == "START_SPAN":
                starts.append(time.monotonic())
            if len(starts) == 4:
                break
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(0.15 < gap < 5 for gap in gaps), gaps
    assert seen == {30}


def test_only_the_backfill_loop_and_the_asset_daemon_read_the_daemon_interval():
    """The wrapper sets the constant only while the backfill loop reads it; a new reader (one that
    reads it in a loop, or after the daemons start) could see the backfill value or keep 30."""
    package = Path(dg.__file__).parent / "_daemon"
    readers = {
        path.name: len(re.findall(r"DEFAULT_DAEMON_INTERVAL_SECONDS", path.read_text()))
        for path in package.rglob("*.py")
        if "DEFAULT_DAEMON_INTERVAL_SECONDS" in path.read_text()
    }
    assert readers == {"controller.py": 2, "backfill.py": 2}, f"check BACKFILL_INTERVAL against these: {readers}"


def test_backfill_interval_has_no_setting_yet():
    keys = internals.backfill_settings_keys()
    assert not [key for key in keys if "interval" in key], DELETE.format(
        patch="BACKFILL_INTERVAL", where=f"set the instance's backfills setting {keys} in deploy/dagster.yaml instead"
    )


# POSTGRES_ENGINE, CLAIM_INTERVAL, EVENT_WRITE ----------------------------------------------------


def test_postgres_engine_shape():
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
    from dagster_postgres.utils import create_pg_engine

    for cls in (PostgresRunStorage, PostgresEventLogStorage, PostgresScheduleStorage):
        assert internals.reads_engine_attribute(cls), cls
        assert list(inspect.signature(cls.optimize_for_webserver).parameters) == [
            "self",
            "statement_timeout",
            "pool_recycle",
            "max_overflow",
        ]
    assert list(inspect.signature(create_pg_engine).parameters)[:2] == ["postgres_url", "token_provider"]


def test_postgres_connection_per_statement_is_still_there():
    from dagster_postgres import PostgresRunStorage

    names = internals.postgres_setting_names()
    where = "pool through dagster-postgres' settings in deploy/dagster.yaml; deploy/taxi_storage.py's engine swap"
    assert not [name for name in names if "pool" in name], DELETE.format(patch="POSTGRES_ENGINE", where=where)
    assert "NullPool" in inspect.getsource(PostgresRunStorage.__init__), DELETE.format(
        patch="POSTGRES_ENGINE", where=where
    )
    # The webserver's engines keep a connection without checking it (an HTTP 500 after a restart).
    assert "pool_pre_ping" not in inspect.getsource(PostgresRunStorage.optimize_for_webserver), DELETE.format(
        patch="POSTGRES_ENGINE", where="taxi_storage's optimize_for_webserver override"
    )


def test_postgres_outages_still_fail_after_dagster_postgres_retries():
    """dagster-postgres retries a failed connection 5 times (about 11 s) with no setting: the
    storages here wait out an outage instead (deploy/taxi_storage.py, OUTAGE_SECONDS)."""
    from dagster_postgres.utils import retry_pg_connection_fn

    names = internals.postgres_setting_names()
    where = "deploy/taxi_storage.py's outage wait (wait_out_outages, retried_when_cut): set the retries instead"
    assert not [name for name in names if "retr" in name], DELETE.format(patch="the outage wait", where=where)
    assert inspect.signature(retry_pg_connection_fn).parameters["retry_limit"].default == 5


def test_claim_interval_shape_and_dagsters_own_retry():
    """Dagster's own storages return a blocked claim without an interval (the step then retries
    after 1 s, growing to 15 s)."""
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("pool", 1)
        assert storage.claim_concurrency_slot("pool", "run-a", "step").is_claimed
        blocked = storage.claim_concurrency_slot("pool", "run-b", "step")
    assert not blocked.is_claimed
    assert blocked.sleep_interval is None, DELETE.format(
        patch="CLAIM_INTERVAL", where="taxi_storage's claim_concurrency_slot override"
    )
    retried = internals.with_claim_retry(blocked, 0.25)  # the shape: the same result, with an interval
    assert (retried.sleep_interval, retried.is_claimed, retried.assigned_timestamp) == (0.25, False, None)


def test_event_write_shape():
    from dagster_postgres import PostgresEventLogStorage

    asset_events, asset_check_events = internals.asset_event_kinds()
    assert dg.DagsterEventType.ASSET_MATERIALIZATION in asset_events
    assert dg.DagsterEventType.ASSET_CHECK_EVALUATION in asset_check_events
    writer = internals.asset_event_tags_writer(PostgresEventLogStorage)
    assert list(inspect.signature(writer).parameters) == ["self", "conn", "events", "event_ids"]


# GRID_TAGS --------------------------------------------------------------------------------------


def test_grid_tags_shape():
    """A materialization's entry rebuilt with tags, indexed by the storage's writer, is found by them."""
    tags = {"dagster/partition/color": "green", "dagster/partition/month": "2020-10-01"}
    key = dg.AssetKey("raw_trips")
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="green|2020-10-01"))
        record = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records[0]
        entry = internals.tagged_entry(record.event_log_entry, tags)
        assert entry.asset_materialization.tags == tags
        assert entry.asset_materialization.partition == "green|2020-10-01"
        writer = internals.tag_index_writer(instance.event_log_storage)
        assert list(inspect.signature(writer).parameters) == ["events", "event_ids"]
        assert instance.get_event_tags_for_asset(key, filter_event_id=record.storage_id) == []
        writer([entry], [record.storage_id])
        assert instance.get_event_tags_for_asset(key, filter_event_id=record.storage_id) == [tags]


# CELERY -----------------------------------------------------------------------------------------


def test_celery_shape():
    found = internals.celery_internals()
    assert found is not None
    health = found.CheckRunHealthResult(found.WorkerStatus.FAILED, "why")
    assert (health.status, health.msg) == (found.WorkerStatus.FAILED, "why")
    failure = found.JobFailureData(error=None, failure_reason=found.RunFailureReason.START_TIMEOUT)
    assert failure.failure_reason == found.RunFailureReason.START_TIMEOUT
    assert found.EngineEventData({"host": "h"}).metadata["host"].value == "h"
    assert "run_id" in inspect.signature(found.ExecuteRunArgs).parameters
    assert "run_id" in inspect.signature(found.ResumeRunArgs).parameters
    assert "as_type" in inspect.signature(found.unpack_value).parameters
    from celery import Celery

    app = Celery("shape", set_as_current=False)
    execute = found.create_execute_job_task(app, shared=False)
    resume = found.create_resume_job_task(app, shared=False)
    assert (execute.name, resume.name) == (found.TASK_EXECUTE_JOB_NAME, found.TASK_RESUME_JOB_NAME)
    assert list(inspect.signature(execute.run).parameters) == ["execute_job_args_packed"]


def test_celery_resume_argument_mismatch_is_still_there():
    """dagster-celery's launcher sends `execute_job_args_packed` to a resume task that takes
    `resume_job_args_packed`: deploy/taxi_celery.py's resume task takes either."""
    from celery import Celery
    from dagster_celery.launcher import CeleryRunLauncher

    found = internals.celery_internals()
    task = found.create_resume_job_task(Celery("resume", set_as_current=False), shared=False)
    sent = re.findall(r"task\.si\(\s*(\w+)=", inspect.getsource(CeleryRunLauncher.resume_run))
    accepted = list(inspect.signature(task.run).parameters)
    assert sent and sent[0] not in accepted, DELETE.format(
        patch="the resume argument workaround", where="deploy/taxi_celery.py's resume_job: take one argument"
    )


# A Dagster whose internals moved ----------------------------------------------------------------

MOVED = r"""
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from dagster._core.execution.plan import instance_concurrency_context as icc
    icc.InstanceConcurrencyContext.interval_to_next_pending_claim_check = lambda self: self.renamed
    import dagster._daemon.controller as controller
    del controller.DEFAULT_DAEMON_INTERVAL_SECONDS
    import dagster._core.events as events
    del events.ASSET_EVENTS, events.JobFailureData  # names of Dagster's that only this project imports

    from taxi_assets import dagster_internals as internals
    import taxi_assets.definitions  # the code location loads
    loaded = len(taxi_assets.definitions.defs.resolve_asset_graph().get_all_asset_keys())
    import taxi_celery  # the launcher's and the workers' module loads
    taxi_celery.app.finalize()
    results = {
        "assets": loaded,
        "pool_wait": internals.sleep_while_waiting_for_pool_slots(),
        "backfill": [internals.set_backfill_interval(3), internals.set_backfill_interval(3)],
        "celery": taxi_celery.INTERNALS is None,
        "tasks": sorted(taxi_celery.app.tasks[name].run.__module__ for name in ("execute_job", "resume_job")),
        "engine": [internals.storage_engine(object()), internals.storage_engine(object())],
        "event_kinds": [internals.asset_event_kinds(), internals.asset_event_kinds()],
        "grid": internals.tag_index_writer(object()),
        "claim": [internals.with_claim_retry("blocked", 0.25), internals.with_claim_retry("blocked", 0.25)],
    }
counts = {}
for warning in caught:
    if issubclass(warning.category, internals.InternalChanged):
        name = str(warning.message).split(": ", 1)[1].split(" ", 1)[0]
        counts[name] = counts.get(name, 0) + 1
print(json.dumps({"results": results, "warnings": counts}))
"""


def test_a_dagster_whose_internals_moved_loads_with_one_warning_each(local_env, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", MOVED],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "deploy"), "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert results["assets"] > 5
    assert results["pool_wait"] is False
    assert results["backfill"] == [False, False]
    assert results["celery"] is True
    assert results["tasks"] == ["dagster_celery.tasks", "dagster_celery.tasks"]  # dagster-celery's own
    assert results["engine"] == [None, None] and results["event_kinds"] == [None, None]
    assert results["grid"] is None
    assert results["claim"] == ["blocked", "blocked"]  # the claim's result as Dagster made it
    assert report["warnings"] == dict.fromkeys(
        ["POOL_WAIT", "BACKFILL_INTERVAL", "CELERY", "POSTGRES_ENGINE", "CLAIM_INTERVAL", "EVENT_WRITE", "GRID_TAGS"], 1
    )


# Not private, not @public ---------------------------------------------------------------------------

UNDOCUMENTED_INSTANCE_METHODS = (
    "get_latest_storage_id_by_partition",
    "get_materialized_partitions",
    "all_instigator_state",
    "get_ticks",
    "purge_ticks",
    "get_backfill",
    "event_log_storage",
    "compute_log_manager",
    "report_engine_event",
    "report_run_failed",
    "add_run_tags",
    "get_runs",
)


@pytest.mark.parametrize("name", UNDOCUMENTED_INSTANCE_METHODS)
def test_the_undocumented_instance_methods_used_are_there(name):
    """docs/decisions.md#dagsters-internals lists these: not private, not in Dagster's @public API."""
    assert hasattr(dg.DagsterInstance, name), f"DagsterInstance.{name} is gone: see the docs' list"


def test_the_dagster_celery_modules_used_are_there():
    from dagster_celery.config import DEFAULT_CONFIG
    from dagster_celery.launcher import CeleryRunLauncher
    from dagster_celery.make_app import make_app
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

    assert isinstance(DEFAULT_CONFIG, dict) and DAGSTER_CELERY_TASK_ID_TAG
    assert callable(make_app) and hasattr(CeleryRunLauncher, "check_run_worker_health")


# SCHEMA_CACHE -----------------------------------------------------------------------------------


def test_schema_questions_shape():
    """Each schema question named still exists on dagster-postgres' storage (else the catalog is
    asked each time again, with one warning), taking only the storage and text arguments."""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    storages = {"run": PostgresRunStorage, "event_log": PostgresEventLogStorage, "schedule": PostgresScheduleStorage}
    for kind, names in internals.SCHEMA_QUESTIONS.items():
        for name in names:
            method = getattr(storages[kind], name, None)
            assert callable(method), f"SCHEMA_CACHE: {storages[kind].__name__}.{name} is gone"
            assert not any(
                p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in inspect.signature(method).parameters.values()
            ), f"SCHEMA_CACHE: {name} takes keywords now"


def test_a_remembered_yes_is_not_asked_again_and_a_no_is():
    asked = []

    class Storage:
        def has_table(self, table_name):
            asked.append(table_name)
            return table_name == "runs"

    internals.remember_schema_answers(Storage, "event_log")  # its other names are missing: warned once
    storage = Storage()
    assert [storage.has_table("runs") for _ in range(3)] == [True, True, True]
    assert [storage.has_table("secondary") for _ in range(2)] == [False, False]
    assert asked == ["runs", "secondary", "secondary"]


# RUN_ORIGIN -------------------------------------------------------------------------------------


def test_run_origin_shape():
    origin = internals.remote_job_origin("taxi_assets.definitions", "taxi_assets", "__repository__", "trips_job", "py")
    assert origin is not None, "RUN_ORIGIN: the origin classes moved"
    assert origin.job_name == "trips_job"
    assert origin.repository_origin.code_location_origin.location_name == "taxi_assets"
    assert "remote_job_origin" in inspect.signature(dg.DagsterInstance.create_run_for_job).parameters
