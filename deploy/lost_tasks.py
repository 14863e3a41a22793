"""The lost-task watchdog: a process `make serve` starts (and restarts) beside the daemon when runs go
to Celery workers.

A launched run is STARTING until a worker starts it. If its task message is lost (Redis restarted
without persistence, a queue flushed), nothing moves it: Dagster's run monitoring checks the
health of STARTED runs only and fails a STARTING one after its start timeout (180 s). This loop
looks every POLL_SECONDS (3) at the STARTING runs whose task was forwarded to the broker, and at where
each task is: waiting in the queue, taken and not yet acknowledged, reserved or active on a worker.
A task found nowhere twice, CONFIRM_SECONDS (10) apart, is lost: its run is failed saying so (reason
START_TIMEOUT, as run monitoring would), and run retries launch it again. Should the message turn
up after all, the worker refuses it: its run is no longer STARTING.

Logs to stdout (make serve: $DAGSTER_HOME/serve-logs/lost-tasks.log). Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

# Every 3 s, confirmed 10 s later: a lost run is failed within seconds of the loss, not after the
# 180 s start timeout (figures: docs/deploy.md#celery-runs-on-workers-that-any-host-can-join).
POLL_SECONDS = 3.0
AFTER_BROKER_ERROR_SECONDS = 1.0  # a broker that just restarted is read again at once
# Between the queue and a worker a task is in flight for a moment (popped from the list, not yet
# listed as reserved by the worker), and a busy worker may answer a broadcast late: one
# observation could take such a task for lost. Two, this far apart, cannot both miss a task that
# is moving (a message is delivered in milliseconds), while a lost one stays lost.
CONFIRM_SECONDS = 10.0

log = logging.getLogger("lost_tasks")


def starting_runs(instance) -> dict[str, str]:
    """{run id: Celery task id} of the STARTING runs whose task the launcher forwarded to the broker."""
    from dagster import DagsterRunStatus, RunsFilter
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

    runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTING]))
    return {run.run_id: run.tags[DAGSTER_CELERY_TASK_ID_TAG] for run in runs if DAGSTER_CELERY_TASK_ID_TAG in run.tags}


class Watchdog:
    """Fails STARTING runs whose Celery task is neither in the broker nor on any worker, seen twice."""

    def __init__(self, instance, celery, confirm_seconds: float = CONFIRM_SECONDS):
        self.instance, self.celery, self.confirm_seconds = instance, celery, confirm_seconds
        self.missing_since: dict[str, float] = {}  # run id -> when its task was first found nowhere

    def check(self) -> list[str] | None:
        """One look; returns the ids of the runs it failed, or None when the broker could not be read."""
        from dagster import DagsterRunStatus
        from taxi_celery import fail_lost_run, tasks_in_broker, tasks_on_workers

        runs = starting_runs(self.instance)
        self.missing_since = {run_id: t for run_id, t in self.missing_since.items() if run_id in runs}
        if not runs:
            return []
        try:
            seen = tasks_in_broker(self.celery)
            missing = [task_id for task_id in runs.values() if task_id not in seen]
            held, answered = tasks_on_workers(self.celery, missing) if missing else (set(), 0)
        except Exception as error:  # the broker is down: nothing can be said; look again later
            log.warning("cannot read the broker (%s): %s", type(error).__name__, error)
            return None
        if missing and not answered:
            # No worker answered (none running, or all reconnecting to the broker): a task one of
            # them holds would look lost. Not an observation; the start timeout still applies.
            log.info("no Celery worker answered; %d STARTING run(s) not judged", len(missing))
            return []
        seen |= held
        failed, now = [], time.monotonic()
        for run_id, task_id in runs.items():
            if task_id in seen:
                self.missing_since.pop(run_id, None)
                continue
            first = self.missing_since.setdefault(run_id, now)
            if now - first < self.confirm_seconds:
                log.info("run %s: task %s neither queued nor on %d worker(s); looking again", run_id, task_id, answered)
                continue
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.status != DagsterRunStatus.STARTING:  # started or ended meanwhile
                self.missing_since.pop(run_id, None)
                continue
            message = (
                f"Celery task {task_id} was lost: for {now - first:.0f} s it was neither in the broker's queue nor "
                f"reserved or active on any of {answered} worker(s) (the broker restarted without persistence?); "
                "failing the run so that run retries launch it again"
            )
            fail_lost_run(self.instance, run, message)
            log.warning("run %s: %s", run_id, message)
            self.missing_since.pop(run_id, None)
            failed.append(run_id)
        return failed


def main() -> int:
    """The watchdog's loop, as `make serve` starts it with Celery: one look every POLL_SECONDS until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    from dagster import DagsterInstance
    from serve import on_stop_signals
    from taxi_celery import INTERNALS, app

    stop = on_stop_signals()
    if INTERNALS is None:  # warned: a lost task's run fails at Dagster's start timeout (run monitoring)
        log.warning("Dagster's internals this loop needs moved (CELERY in taxi_assets/dagster_internals.py): idle")
        stop.wait()  # not an exit: make serve would start it again and again
        return 0
    with DagsterInstance.get() as instance:
        watchdog = Watchdog(instance, app)
        log.info("watching STARTING runs for lost Celery tasks every %.0f s", POLL_SECONDS)
        while not stop.is_set():
            try:
                looked = watchdog.check() is not None
            except Exception:  # PostgreSQL away for a moment: the next look tries again
                log.exception("lost-task check failed")
                looked = True
            stop.wait(POLL_SECONDS if looked else AFTER_BROKER_ERROR_SECONDS)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "lost-tasks"
    sys.exit(main())
