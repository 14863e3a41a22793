"""The Celery side of the deployment: the run launcher the daemon uses when DAGSTER_CELERY_BROKER_URL
is set (`make serve`), and the Celery app its workers run (`make worker`, deploy/worker.py).

Both import this module from deploy/ (serve.py and worker.py put it on PYTHONPATH):

- `TaxiCeleryRunLauncher` is dagster-celery's `CeleryRunLauncher` (each run is one Celery task on
  the `dagster` queue, run by a long-lived worker process that keeps its imports) with a health
  check that also notices a worker that died as a whole. The stock check reads the task's state
  from the result backend: a killed pool process is reported FAILURE by its worker, but a worker
  killed with its pool (machine lost, SIGKILL, OOM killer on the parent) leaves the task STARTED
  forever, and a result backend that lost its keys (Redis restarted without persistence) says
  PENDING, which run monitoring would take for a dead run. Here a run whose task is not SUCCESS or
  FAILURE is asked about to the worker that took it (recorded in its tags): running there is
  RUNNING; not running there, or no answer for WORKER_LOST_SECONDS, is FAILED (run monitoring
  marks the run failed; run retries run it again).
- `app` is the workers' Celery app: dagster-celery's tasks (execute_job, resume_job), configured
  from the environment, and a hook that records in each run which worker runs it (tags
  `taxi/worker_host`, `taxi/worker_pid`, `taxi/celery_worker`, and an engine event in the run's log).
"""

from __future__ import annotations

import os
import socket
import time

from celery.signals import task_prerun, worker_process_init
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

QUEUE = "dagster"  # dagster-celery's queue: make_app declares only this one
WORKER_HOST_TAG, WORKER_PID_TAG, CELERY_WORKER_TAG = "taxi/worker_host", "taxi/worker_pid", "taxi/celery_worker"
WORKER_LOST_SECONDS = 10.0  # a worker silent (or not running the task) this long has lost the run
PING_TIMEOUT_SECONDS = 3.0

# Settings shared by the launcher (daemon, webserver) and the workers.
CELERY_SETTINGS = {
    **DEFAULT_CONFIG,
    # A worker takes a run only when one of its pool processes is free (Redis brokers only): with
    # Celery's prefetch, a busy worker would hold runs that an idle one could start.
    "worker_prefetch_multiplier": 1,
    "worker_disable_prefetch": True,
    "task_acks_late": False,  # a run is never delivered twice: a lost one is retried by Dagster, as a new run
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,  # a worker waits for a broker that restarts, however long
    "result_expires": 7 * 24 * 3600,
    "worker_send_task_events": False,
}


def broker_url() -> str | None:
    return os.environ.get("DAGSTER_CELERY_BROKER_URL") or None


def backend_url() -> str | None:
    """The result backend: DAGSTER_CELERY_BACKEND_URL, else the broker's server."""
    return os.environ.get("DAGSTER_CELERY_BACKEND_URL") or broker_url()


class TaxiCeleryRunLauncher(CeleryRunLauncher):
    """CeleryRunLauncher whose health check asks the worker when the backend cannot tell."""

    def __init__(self, *args, **kwargs):
        kwargs["config_source"] = {**CELERY_SETTINGS, **(kwargs.get("config_source") or {})}
        super().__init__(*args, **kwargs)
        self._silent_since: dict[str, float] = {}

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        worker = run.tags.get(CELERY_WORKER_TAG)
        if not task_id or not worker:  # the worker has not recorded itself yet: it is starting the run
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        state = self.celery.AsyncResult(task_id).state
        if state == "SUCCESS":
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if state in ("FAILURE", "REVOKED"):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery task {state} on {worker}")
        try:
            replies = self.celery.control.inspect(destination=[worker], timeout=PING_TIMEOUT_SECONDS, limit=1).active()
        except Exception:  # the broker is unreachable: nothing can be said about the worker
            return CheckRunHealthResult(WorkerStatus.RUNNING, "broker unreachable")
        if replies and any(task.get("id") == task_id for task in replies.get(worker) or []):
            self._silent_since.pop(task_id, None)
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        first = self._silent_since.setdefault(task_id, time.monotonic())
        why = f"{worker} is not running task {task_id}" if replies else f"{worker} does not answer"
        if time.monotonic() - first < WORKER_LOST_SECONDS:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{why} (task {state}); checking again")
        self._silent_since.pop(task_id, None)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"{why} (task {state}) for {WORKER_LOST_SECONDS:.0f} s")


app = make_app(
    {
        "broker": broker_url(),
        "backend": backend_url(),
        "include": [],
        "config_source": CELERY_SETTINGS,
        "task_default_queue": QUEUE,
    }
)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)

_instance = None


@worker_process_init.connect
def warm_up(**_ignored) -> None:
    """In each new pool process, before its first run: open the instance (PostgreSQL storage, the
    run launcher's Celery app), which otherwise costs the process's first run a few seconds."""
    global _instance
    from dagster import DagsterInstance

    try:
        _instance = DagsterInstance.get()
        _instance.get_run_records(limit=1)
    except Exception:  # the run will report what is wrong, with its own instance
        _instance = None


@task_prerun.connect
def record_worker(task_id=None, task=None, kwargs=None, **_ignored) -> None:
    """Before a run starts in this pool process: its host, pid and Celery node into the run's tags and log."""
    global _instance
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    from dagster import DagsterInstance
    from dagster._core.events import EngineEventData
    from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs
    from dagster._serdes import unpack_value

    run_id = unpack_value(packed, as_type=(ExecuteRunArgs, ResumeRunArgs)).run_id
    if _instance is None:
        _instance = DagsterInstance.get()
    run = _instance.get_run_by_id(run_id)
    if run is None:
        return
    host, pid, node = socket.gethostname(), os.getpid(), task.request.hostname
    _instance.add_run_tags(run_id, {WORKER_HOST_TAG: host, WORKER_PID_TAG: str(pid), CELERY_WORKER_TAG: node})
    _instance.report_engine_event(
        f"Running on Celery worker {node} (host {host}, pid {pid})",
        run,
        EngineEventData({"Celery worker": node, "host": host, "pid": str(pid), "Celery task": task_id}),
    )
