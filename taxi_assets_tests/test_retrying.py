"""The one retry loop: what it retries, how long it pauses, and when it stops. Real sleeps, kept to
hundredths of a second."""

import itertools
import time

import pytest

from taxi_assets.retrying import retry


class Flaky:
    """Raises `error()` on its first `failures` calls, then returns the number of calls; notes when
    each call began."""

    def __init__(self, failures: int, error=lambda: ConnectionError("reset by peer")):
        self.failures, self.error, self.calls = failures, error, []

    def __call__(self) -> int:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error()
        return len(self.calls)


def noted(into: list):
    """An on_retry callback that notes (attempt, exception, pause, elapsed)."""
    return lambda *args: into.append(args)


def test_retries_until_it_succeeds_and_returns_the_result():
    fn, retries = Flaky(failures=2), []
    assert retry(fn, retry_on=ConnectionError, attempts=5, first_pause=0.001, on_retry=noted(retries)) == 3
    assert len(fn.calls) == 3
    assert [attempt for attempt, *_ in retries] == [1, 2]
    assert all(isinstance(exc, ConnectionError) for _, exc, *_ in retries)


def test_it_stops_after_the_attempts_and_raises_the_last_failure_itself():
    raised = []

    def fail():
        raised.append(ConnectionError(f"reset {len(raised) + 1}"))
        raise raised[-1]

    retries = []
    with pytest.raises(ConnectionError, match="reset 3") as err:
        retry(fail, retry_on=ConnectionError, attempts=3, first_pause=0.001, on_retry=noted(retries))
    assert len(raised) == 3 and err.value is raised[-1]
    assert len(retries) == 2  # no pause after the last attempt


def test_a_single_attempt_is_not_retried():
    fn = Flaky(failures=1)
    with pytest.raises(ConnectionError):
        retry(fn, retry_on=ConnectionError, attempts=1, first_pause=0.001)
    assert len(fn.calls) == 1


def test_a_failure_that_does_not_match_is_raised_at_once():
    fn, retries = Flaky(failures=5, error=lambda: ValueError("bad data")), []
    with pytest.raises(ValueError, match="bad data"):
        retry(fn, retry_on=(ConnectionError, TimeoutError), attempts=5, first_pause=0.001, on_retry=noted(retries))
    assert len(fn.calls) == 1 and retries == []


def test_keyboard_interrupt_is_not_retried_even_on_any_exception():
    fn = Flaky(failures=5, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        retry(fn, retry_on=Exception, attempts=5, first_pause=0.001)
    assert len(fn.calls) == 1


def test_a_predicate_chooses_by_the_message():
    messages = iter(["database is locked", "Database is LOCKED", "disk full"])
    fn = Flaky(failures=3, error=lambda: OSError(next(messages)))
    with pytest.raises(OSError, match="disk full"):
        retry(fn, retry_on=lambda exc: "locked" in str(exc).lower(), attempts=10, first_pause=0.001)
    assert len(fn.calls) == 3


def test_pauses_double_up_to_the_cap_and_the_callback_sees_each_one_slept():
    fn, retries = Flaky(failures=4), []
    retry(fn, retry_on=ConnectionError, attempts=5, first_pause=0.01, max_pause=0.03, jitter=0, on_retry=noted(retries))
    pauses = [pause for _, _, pause, _ in retries]
    assert pauses == pytest.approx([0.01, 0.02, 0.03, 0.03])
    gaps = [later - earlier for earlier, later in itertools.pairwise(fn.calls)]
    assert all(gap >= pause for gap, pause in zip(gaps, pauses, strict=True))
    elapsed = [elapsed for *_, elapsed in retries]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= sum(pauses[:-1])


@pytest.mark.parametrize("jitter, low", [(1.0, 0.0), (0.5, 0.0005)])
def test_jitter_draws_each_pause_from_its_share_of_the_backoff(jitter, low):
    retries = []
    retry(
        Flaky(failures=40),
        retry_on=ConnectionError,
        attempts=41,
        first_pause=0.001,
        max_pause=0.001,
        jitter=jitter,
        on_retry=noted(retries),
    )
    pauses = [pause for _, _, pause, _ in retries]
    assert all(low <= pause <= 0.001 for pause in pauses)
    assert len(set(pauses)) > 30  # drawn, not fixed
    if jitter == 1.0:
        assert min(pauses) < 0.0005  # full jitter uses the lower half too


def test_no_pause_is_begun_that_would_end_past_the_time_bound():
    # Pauses 0.02, 0.04, 0.08 end by 0.14 s; the next, 0.16, would end past 0.25: the 4th failure is final.
    fn, retries = Flaky(failures=100), []
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        retry(
            fn,
            retry_on=ConnectionError,
            give_up_after_seconds=0.25,
            first_pause=0.02,
            jitter=0,
            on_retry=noted(retries),
        )
    assert time.monotonic() - started < 0.25
    assert len(fn.calls) == 4
    assert all(elapsed + pause <= 0.25 for _, _, pause, elapsed in retries)


def test_waiting_the_whole_bound_shortens_the_last_pause_and_gives_up_only_past_it():
    # Pauses 0.1, then 0.2 cut to end at 0.25 s; the 3rd failure comes after the bound and is final.
    fn, retries, gave_up = Flaky(failures=100), [], []

    def give_up(attempt, exc, elapsed):
        gave_up.append((attempt, elapsed))
        return TimeoutError(f"still failing after {attempt} attempts: {exc}")

    with pytest.raises(TimeoutError, match="still failing after 3 attempts: reset by peer"):
        retry(
            fn,
            retry_on=ConnectionError,
            give_up_after_seconds=0.25,
            wait_whole_bound=True,
            first_pause=0.1,
            jitter=0,
            on_retry=noted(retries),
            on_give_up=give_up,
        )
    assert len(fn.calls) == 3
    (_, _, first, _), (_, _, second, elapsed) = retries
    assert first == pytest.approx(0.1)
    assert second == pytest.approx(0.25 - elapsed) and second < 0.2
    [(attempt, elapsed)] = gave_up
    assert attempt == 3 and elapsed >= 0.25


def test_the_error_of_on_give_up_is_raised_from_the_last_failure_or_alone():
    def give_up(attempt, exc, elapsed):
        return RuntimeError(f"{exc} (gave up after {attempt} attempts in {elapsed:.0f} s)")

    for chain in (True, False):
        with pytest.raises(RuntimeError, match=r"^reset by peer \(gave up after 2 attempts in 0 s\)$") as err:
            retry(
                Flaky(failures=9),
                retry_on=ConnectionError,
                attempts=2,
                first_pause=0.001,
                on_give_up=give_up,
                chain=chain,
            )
        if chain:
            assert isinstance(err.value.__cause__, ConnectionError)
        else:
            assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_retry_without_any_bound_is_refused():
    with pytest.raises(ValueError, match="needs a bound"):
        retry(Flaky(failures=0), retry_on=ConnectionError, first_pause=0.001)
    with pytest.raises(ValueError, match="at least 1"):
        retry(Flaky(failures=0), retry_on=ConnectionError, attempts=0, first_pause=0.001)
