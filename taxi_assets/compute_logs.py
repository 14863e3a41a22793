"""Where the instance keeps a run's compute logs (its steps' stdout and stderr), and a run that
cannot keep them.

Dagster's compute-log capture writes each run's output into files under DAGSTER_HOME (the
`LocalComputeLogManager`, `{DAGSTER_HOME}/storage/{run_id}/compute_logs/`), and when that disk is
full it loses the output without a word: the run succeeds with 0-byte logs. So each run of this
code location starts with a look at the room left there (`checked_in_process_executor`, the code
location's executor) and fails, naming the folder and the bytes free, rather than run blind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from taxi_assets.disk import existing_folder, free_bytes

# Below this much free space where the compute logs go, a run fails at its start. A run writes a
# few KB of compute logs (docs/deploy.md#disk-logs-and-retention) and up to 4 runs go side by side;
# 1 MiB leaves them room with a wide margin, while a disk that full has nothing left for the next
# big write anyway.
COMPUTE_LOG_FLOOR_BYTES = 1 << 20

COMPUTE_LOGS = "compute_logs"  # the middle part of the log keys Dagster builds for a run


class ComputeLogsDiskFull(Exception):
    """The disk where this run's compute logs go has too little room: the run is not started."""


def run_log_folder(instance: dg.DagsterInstance, run_id: str) -> Path | None:
    """The local folder of `run_id`'s compute logs, `{base_dir}/{run_id}/compute_logs`, or None
    when the instance keeps them elsewhere (a cloud or no-op compute log manager)."""
    manager = instance.compute_log_manager
    key = manager.build_log_key_for_run(run_id, "probe")
    location = manager.get_log_metadata(key).stdout_location
    if not location or "://" in location:
        return None
    folder = Path(location).parent
    # The local manager's layout: {base_dir}/{run_id}/compute_logs/{file}.out
    return folder if folder.is_absolute() and folder.parts[-2:] == (run_id, COMPUTE_LOGS) else None


def compute_log_root(instance: dg.DagsterInstance) -> Path | None:
    """The local folder that holds every run's compute logs (`{base_dir}`), or None (not local)."""
    probe = run_log_folder(instance, "0" * 32)
    return probe.parent.parent if probe is not None else None


def check_compute_log_space(instance: dg.DagsterInstance, run_id: str) -> None:
    """Raise ComputeLogsDiskFull naming the folder and the bytes free when the run's compute logs
    would have less than COMPUTE_LOG_FLOOR_BYTES of room."""
    folder = run_log_folder(instance, run_id)
    if folder is None:
        return
    free = free_bytes(folder)
    if free < COMPUTE_LOG_FLOOR_BYTES:
        raise ComputeLogsDiskFull(
            f"the disk of this run's compute logs is full: {free:,} bytes free in {existing_folder(folder)} "
            f"(the logs go to {folder}; a run needs {COMPUTE_LOG_FLOOR_BYTES:,}), so its output would be lost. "
            "Free some space there (under DAGSTER_HOME); the retention job removes old compute logs and runs"
        )


class SpaceCheckedExecutor(dg.Executor):
    """Dagster's in-process executor, after a look at the room for the run's compute logs."""

    def __init__(self, inner: dg.Executor):
        self.inner = inner

    @property
    def retries(self):
        """The wrapped executor's retry mode."""
        return self.inner.retries

    @property
    def step_dependency_config(self):
        """The wrapped executor's step dependency config."""
        return self.inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        """Fail the run at once if its compute logs have no room, else run the plan in process."""
        check_compute_log_space(plan_context.instance, plan_context.run_id)
        yield from self.inner.execute(plan_context, execution_plan)


@dg.executor(
    name="in_process",
    config_schema=dg.in_process_executor.config_schema,
)
def checked_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """`dg.in_process_executor` (same config), failing a run at its start when the disk of its
    compute logs is full, naming the folder and the bytes free."""
    return SpaceCheckedExecutor(dg.in_process_executor.executor_creation_fn(init_context))
