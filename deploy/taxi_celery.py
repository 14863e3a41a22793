"""The Celery side of the deployment: the run launcher the daemon uses when DAGSTER_CELERY_BROKER_URL
is set (`make serve`), and the Celery app its workers run (`make worker`, deploy/worker.py).

Both import this module from deploy/ (serve.py and worker.py put it on PYTHONPATH). What the broker
and the result backend say is not trusted alone (whoever can write to Redis could forge it):

- `TaxiCeleryRunLauncher` is dagster-celery's `CeleryRunLauncher` (each run is one Celery task on
  the `dagster` queue, run by a long-lived worker process that keeps its imports) whose health
  check asks the worker that took the run (recorded in its tags) whether the task is active there:
  active is RUNNING, whatever the result backend says (a forged or stale FAILURE fails no healthy
  run); FAILURE or REVOKED with the worker saying it is not running the task is FAILED; not running
  there or no answer for WORKER_LOST_SECONDS (a worker killed as a whole leaves its task STARTED
  forever; Redis restarted without persistence says PENDING) is FAILED. Run monitoring marks the
  run failed; run retries run it again.
- `app` is the workers' Celery app. Its execute_job and resume_job tasks are this module's: a task
  is refused (no tag, no event, nothing run) unless its run exists and is STARTING (a replayed or
  forged message for a finished or running run), then the task records which worker runs it (tags
  `taxi/worker_host`, `taxi/worker_pid`, `taxi/celery_worker`, and an engine event in the run's log)
  and runs dagster-celery's task body.
- `tasks_in_broker` and `tasks_on_workers` tell where a run's task is: deploy/lost_tasks.py fails a
  STARTING run whose task is nowhere (lost with a broker restarted without persistence).
"""

from __future__ import annotations

import json
import os
import socket
import time

from celery import Celery
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger
from dagster import DagsterRunStatus
from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.make_app import make_app
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from taxi_assets.dagster_internals import add_dagster_celery_tasks, celery_internals, sleep_while_waiting_for_pool_slots

# Dagster's and dagster-celery's private names this module needs (CELERY in
# taxi_assets/dagster_internals.py). None when one moved: the launcher's health check, the tasks and
# the lost-task watchdog are then dagster-celery's own (one warning says so).
INTERNALS = celery_internals()


QUEUE = "dagster"  # dagster-celery's queue: make_app declares only this one
WORKER_HOST_TAG, WORKER_PID_TAG, CELERY_WORKER_TAG = "taxi/worker_host", "taxi/worker_pid", "taxi/celery_worker"
WORKER_LOST_SECONDS = 10.0  # a worker silent (or not running the task) this long has lost the run
PING_TIMEOUT_SECONDS = 3.0
# A worker waits this long for the launcher to record the task's id before it writes the run's tags:
# Dagster's add_run_tags rewrites the run's whole tag set (read, merge, write), so two writers at
# the same moment lose one's tags (seen: a run without its worker tags, the worker having taken
# the task the instant it was sent). The launcher writes right after sending, within milliseconds.
LAUNCH_TAG_WAIT_SECONDS = 10.0
REFUSED = "refused"  # what a refused task returns (its result in the backend)

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
    """DAGSTER_CELERY_BROKER_URL, or None when unset."""
    return os.environ.get("DAGSTER_CELERY_BROKER_URL") or None


def backend_url() -> str | None:
    """The result backend: DAGSTER_CELERY_BACKEND_URL, else the broker's server."""
    return os.environ.get("DAGSTER_CELERY_BACKEND_URL") or broker_url()


def task_active_on(celery: Celery, worker: str, task_id: str) -> bool | None:
    """Is `task_id` active on `worker`: True, False, or None when the worker (or the broker) does not answer."""
    try:
        replies = celery.control.inspect(destination=[worker], timeout=PING_TIMEOUT_SECONDS, limit=1).active()
    except Exception:  # the broker is unreachable: nothing can be said about the worker
        return None
    if not replies or worker not in replies:
        return None
    return any(task.get("id") == task_id for task in replies.get(worker) or [])


class TaxiCeleryRunLauncher(CeleryRunLauncher):
    """CeleryRunLauncher whose health check believes the worker, not the result backend alone."""

    def __init__(self, *args, **kwargs):
        kwargs["config_source"] = {**CELERY_SETTINGS, **(kwargs.get("config_source") or {})}
        super().__init__(*args, **kwargs)
        self._silent_since: dict[str, float] = {}

    def check_run_worker_health(self, run):
        """Whether the run's worker still runs its task: the worker is asked first; the result backend's
        FAILURE counts only when the worker is not running the task."""
        if INTERNALS is None:
            return super().check_run_worker_health(run)
        CheckRunHealthResult, WorkerStatus = INTERNALS.CheckRunHealthResult, INTERNALS.WorkerStatus
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        worker = run.tags.get(CELERY_WORKER_TAG)
        if not task_id or not worker:  # the worker has not recorded itself yet: it is starting the run
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        try:
            state = self.celery.AsyncResult(task_id).state
        except Exception:  # the result backend is unreachable: the worker is asked all the same
            state = "UNKNOWN"
        active = task_active_on(self.celery, worker, task_id)
        if active:
            # The worker runs it: a FAILURE or REVOKED in the backend is stale or forged.
            self._silent_since.pop(task_id, None)
            note = "" if state in ("STARTED", "PENDING") else f"result backend says {state}; the worker runs it"
            return CheckRunHealthResult(WorkerStatus.RUNNING, note or None)
        if active is False and state in ("FAILURE", "REVOKED"):
            self._silent_since.pop(task_id, None)
            why = f"Celery task {state} on {worker}, which is not running it"
            return CheckRunHealthResult(WorkerStatus.FAILED, why)
        first = self._silent_since.setdefault(task_id, time.monotonic())
        why = f"{worker} is not running task {task_id}" if active is False else f"{worker} does not answer"
        if time.monotonic() - first < WORKER_LOST_SECONDS:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{why} (task {state}); checking again")
        self._silent_since.pop(task_id, None)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"{why} (task {state}) for {WORKER_LOST_SECONDS:.0f} s")


def task_id_of(message: str | bytes) -> str | None:
    """The Celery task id in a message as kombu's Redis transport stores it (JSON, protocol 2)."""
    try:
        payload = json.loads(message)
    except ValueError:
        return None
    if isinstance(payload, list):  # the unacked hash holds [message, exchange, routing key]
        payload = payload[0] if payload and isinstance(payload[0], dict) else {}
    return ((payload or {}).get("headers") or {}).get("id") if isinstance(payload, dict) else None


def tasks_in_broker(celery: Celery, queue: str = QUEUE) -> set[str]:
    """Ids of the tasks waiting in `queue` (each priority's list) or taken from it and not yet
    acknowledged by a worker. Raises when the broker cannot be read."""
    found: set[str] = set()
    with celery.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        names = {queue} | {f"{queue}{channel.sep}{step}" for step in channel.priority_steps if step}
        for name in sorted(names):
            found.update(filter(None, map(task_id_of, client.lrange(name, 0, -1))))
        found.update(filter(None, map(task_id_of, client.hvals(channel.unacked_key))))
    return found


def tasks_on_workers(celery: Celery, task_ids: list[str]) -> tuple[set[str], int]:
    """(ids among `task_ids` some worker holds, reserved or active; how many workers answered)."""
    replies = celery.control.inspect(timeout=PING_TIMEOUT_SECONDS).query_task(*task_ids) or {}
    held = {task_id for per_worker in replies.values() for task_id in (per_worker or {})}
    return held, len(replies)


def fail_lost_run(instance, run, message: str) -> None:
    """Mark a run whose task was lost failed, as run monitoring marks a run that never started
    (reason START_TIMEOUT): run retries launch it again. Needs INTERNALS (deploy/lost_tasks.py checks)."""
    reason = INTERNALS.RunFailureReason.START_TIMEOUT
    instance.report_run_failed(run, message, INTERNALS.JobFailureData(error=None, failure_reason=reason))


app = make_app(
    {
        "broker": broker_url(),
        "backend": backend_url(),
        "include": [],
        "config_source": CELERY_SETTINGS,
        "task_default_queue": QUEUE,
    }
)
logger = get_task_logger(__name__)
_instance = None


def worker_instance():
    """This worker process's Dagster instance, made once."""
    global _instance
    if _instance is None:
        from dagster import DagsterInstance

        _instance = DagsterInstance.get()
    return _instance


@worker_process_init.connect
def warm_up(**_ignored) -> None:
    """In each new pool process, before its first run: open the instance (PostgreSQL storage, the
    run launcher's Celery app), which otherwise costs the process's first run a few seconds."""
    global _instance
    try:
        worker_instance().get_run_records(limit=1)
    except Exception:  # the run will report what is wrong, with its own instance
        _instance = None


def admit(task, packed) -> bool:
    """May this task run its run? Only if the run exists, is STARTING (launched, not started: a
    message replayed for a running or finished run is refused) and its recorded task id is this
    task's (waited for up to LAUNCH_TAG_WAIT_SECONDS: the launcher records it after sending). An
    admitted task records its worker in the run's tags and log.

    A Celery signal handler cannot refuse a task, hence this check inside the task's body. Two
    copies of one message delivered within the same instant could both pass it: the first to start
    moves the run to STARTED within a second, and Dagster refuses to execute a run that is not
    STARTING (it logs engine events only)."""
    run_id = INTERNALS.unpack_value(packed, as_type=(INTERNALS.ExecuteRunArgs, INTERNALS.ResumeRunArgs)).run_id
    instance = worker_instance()
    run = instance.get_run_by_id(run_id)
    deadline = time.monotonic() + LAUNCH_TAG_WAIT_SECONDS
    while (
        run is not None
        and run.status == DagsterRunStatus.STARTING
        # Absent until the launcher records it; a retry run starts with its parent's task id (Dagster
        # copies the parent's tags), replaced by this task's once the launcher records it.
        and run.tags.get(DAGSTER_CELERY_TASK_ID_TAG) != task.request.id
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
        run = instance.get_run_by_id(run_id)
    launched = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG) if run else None
    if run is None or run.status != DagsterRunStatus.STARTING or (launched and launched != task.request.id):
        why = (
            "no such run"
            if run is None
            else f"the run is {run.status.value}, not STARTING"
            if run.status != DagsterRunStatus.STARTING
            else f"the run was launched as task {launched}"
        )
        logger.warning("refused task %s for run %s: %s (a replayed or forged message)", task.request.id, run_id, why)
        return False
    host, pid, node = socket.gethostname(), os.getpid(), task.request.hostname
    instance.add_run_tags(run_id, {WORKER_HOST_TAG: host, WORKER_PID_TAG: str(pid), CELERY_WORKER_TAG: node})
    instance.report_engine_event(
        f"Running on Celery worker {node} (host {host}, pid {pid})",
        run,
        INTERNALS.EngineEventData(
            {"Celery worker": node, "host": host, "pid": str(pid), "Celery task": task.request.id}
        ),
    )
    return True


@worker_init.connect
def patch_worker(**_ignored) -> None:
    """In the worker's parent process, before its pool forks: steps waiting for a pool slot sleep
    (POOL_WAIT in taxi_assets/dagster_internals.py; the code location's import makes it too)."""
    sleep_while_waiting_for_pool_slots()


if INTERNALS is None:
    add_dagster_celery_tasks(app)  # dagster-celery's own tasks (no admission check), if it still can
else:
    # dagster-celery's task bodies, made on an app of their own (shared=False: not registered on any
    # other app), so that `app` holds this module's tasks under their names.
    _bodies = Celery("taxi-dagster-celery-bodies", set_as_current=False)
    dagster_execute_job = INTERNALS.create_execute_job_task(_bodies, shared=False)
    dagster_resume_job = INTERNALS.create_resume_job_task(_bodies, shared=False)

    @app.task(bind=True, name=INTERNALS.TASK_EXECUTE_JOB_NAME, track_started=True, shared=False)
    def execute_job(self, execute_job_args_packed):
        if not admit(self, execute_job_args_packed):
            return REFUSED
        return dagster_execute_job.run(execute_job_args_packed)

    @app.task(bind=True, name=INTERNALS.TASK_RESUME_JOB_NAME, track_started=True, shared=False)
    def resume_job(self, execute_job_args_packed=None, resume_job_args_packed=None):
        # dagster-celery's launcher sends `execute_job_args_packed` to a task expecting
        # `resume_job_args_packed` (its resume never ran); either is taken. Resume is off here
        # (max_resume_run_attempts 0), and a resumed run is not STARTING: the check refuses it.
        packed = resume_job_args_packed if resume_job_args_packed is not None else execute_job_args_packed
        if not admit(self, packed):
            return REFUSED
        return dagster_resume_job.run(packed)
