"""A real `dagster asset materialize` process whose step waits for a pool slot another run holds:
shared by test_pool_wait.py (SQLite) and test_instance_storage.py (PostgreSQL)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
HOLDER_RUN, HOLDER_STEP = "another-run", "another-step"


@contextlib.contextmanager
def run_blocked_on_pool(
    instance: dg.DagsterInstance, pool: str, select: str, partition: str, log: Path, timeout: float = 180
) -> Iterator[subprocess.Popen]:
    """Hold `pool`'s one slot as another run would, start `select` for `partition` in a process of
    its own (output to `log`), and yield the process once its step waits for the slot. The caller
    frees the slot with `free_slot(instance)`; the process is killed if still running on the way out."""
    storage = instance.event_log_storage
    storage.set_concurrency_slots(pool, 1)
    assert storage.claim_concurrency_slot(pool, HOLDER_RUN, HOLDER_STEP).is_claimed
    run = subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets.definitions"]
        + ["--select", select, "--partition", partition],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not storage.get_concurrency_info(pool).pending_step_count:
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield run
    finally:
        if run.poll() is None:
            run.kill()


def free_slot(instance: dg.DagsterInstance) -> None:
    instance.event_log_storage.free_concurrency_slot_for_step(HOLDER_RUN, HOLDER_STEP)
