"""One retry loop with exponential backoff and jitter, for every place that retries.

Like Dagster's own `backoff` (which `DuckDBResource.get_connection` uses), but with jitter, a bound
in time as well as in attempts, a predicate for which failures to retry, and callbacks to log a
retry and to word the final error. It imports nothing from the rest of the package.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def retry(
    fn: Callable[[], T],
    *,
    retry_on: RetryOn,
    attempts: int | None = None,
    give_up_after_seconds: float | None = None,
    wait_whole_bound: bool = False,
    first_pause: float,
    max_pause: float | None = None,
    jitter: float = 1.0,  # full jitter: callers that failed together (one host, one lock) come back apart
    on_retry: Callable[[int, BaseException, float, float], object] | None = None,
    on_give_up: Callable[[int, BaseException, float], BaseException] | None = None,
    chain: bool = True,
) -> T:
    """`fn()`'s result, calling it again after a pause while it raises what `retry_on` matches.

    retry_on: exception types, or a predicate on the exception; anything else propagates at once.
    attempts: at most this many calls (None: no limit but the time bound).
    give_up_after_seconds: the time bound, counted from the first call. By default a pause that
        would end past it is not taken: the failure is final at once (no try is begun that the
        bound would cut short). With `wait_whole_bound`, pauses are instead shortened to end at the
        bound, and the failure is final only once the bound has passed (waiting for a lock: any
        moment may be the one).
    first_pause, max_pause: the pause before the second call, doubling after each retry, capped
        at `max_pause` (None: no cap).
    jitter: the share of each pause drawn at random: the pause is `p * uniform(1 - jitter, 1)`
        (1.0 is "full jitter", 0 none).
    on_retry(attempt, exc, pause, elapsed): called before each pause; `attempt` is the call that
        just failed (1 for the first), `elapsed` the seconds since the first call began.
    on_give_up(attempt, exc, elapsed): the exception to raise when retrying stops, raised from the
        last failure (`chain=False`: from None). Without it, the last failure itself is re-raised.
    """
    if attempts is None and give_up_after_seconds is None:
        raise ValueError("retry needs a bound: attempts, give_up_after_seconds, or both")
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    types = retry_on if isinstance(retry_on, type | tuple) else None
    bound = math.inf if give_up_after_seconds is None else give_up_after_seconds
    cap = math.inf if max_pause is None else max_pause
    started = time.monotonic()
    backoff = first_pause
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except BaseException as exc:
            if not (isinstance(exc, types) if types is not None else retry_on(exc)):
                raise
            elapsed = time.monotonic() - started
            if wait_whole_bound:
                out_of_time = elapsed >= bound
                pause = min(backoff, bound - elapsed) * random.uniform(1 - jitter, 1)
            else:
                pause = backoff * random.uniform(1 - jitter, 1)
                out_of_time = elapsed + pause > bound
            if attempt == attempts or out_of_time:
                if on_give_up is None:
                    raise
                error = on_give_up(attempt, exc, elapsed)
                if chain:
                    raise error from exc
                raise error from None
            if on_retry is not None:
                on_retry(attempt, exc, pause, elapsed)
        time.sleep(pause)
        backoff = min(backoff * 2, cap)
