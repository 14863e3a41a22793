"""A fix for Dagster's busy wait on pool slots, made in every process that loads this code location
(the code server, each run's process, a Celery worker's pool processes, `dagster asset materialize`).

A step waiting for a slot of its pool (`upstream`, `warehouse`) should sleep until its next claim
(Dagster retries after 1 s, then a little longer each time, up to 15 s). In Dagster 1.13,
`InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns `min(0, ...)`, never
more than 0, so the run's executor loops without sleeping: each waiting run takes a whole core
(dagster PR #20367 found this and was closed unmerged). In a backfill, runs waiting for the one
`warehouse` slot took the CPU from the runs doing the work (docs/decisions.md, "What sets a
backfill's pace").

The replacement returns the time until the next claim, not below 0. It is made only while the
installed Dagster still has the bug, tried on a stand-in (not by version number), so a Dagster that
fixes it keeps its own.
"""

from __future__ import annotations

import time
import warnings
from types import SimpleNamespace

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext


def _until_next_claim(self: InstanceConcurrencyContext) -> float:
    timeouts = self._pending_timeouts
    if not self.has_pending_claims() or not timeouts:
        return 0.0
    return max(0.0, min(timeouts.values()) - time.time())


_until_next_claim.fixes_busy_wait = True


def _busy_waits() -> bool:
    """Whether Dagster's own method says "check now" for a claim due in a minute."""
    due_in_a_minute = SimpleNamespace(
        _pending_claims={"step"}, _pending_timeouts={"step": time.time() + 60}, has_pending_claims=lambda: True
    )
    return InstanceConcurrencyContext.interval_to_next_pending_claim_check(due_in_a_minute) <= 0


def sleep_while_waiting_for_pool_slots() -> bool:
    """Replace the method if it busy-waits; whether the replacement is in place. A Dagster whose
    method no longer works on the stand-in keeps its own (the code location must load anyway)."""
    current = InstanceConcurrencyContext.interval_to_next_pending_claim_check
    if getattr(current, "fixes_busy_wait", False):
        return True
    try:
        busy = _busy_waits()
    except Exception as exc:  # noqa: BLE001 - any change in Dagster's method
        warnings.warn(f"taxi_assets.pool_wait: Dagster's pool wait not checked ({exc!r}); left as it is", stacklevel=2)
        return False
    if not busy:
        return False
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _until_next_claim
    return True
