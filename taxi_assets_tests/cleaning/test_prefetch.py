"""The two-thread hand-off: order kept, errors raised where the consumer is, no thread left behind."""

import threading
import time

import pytest

from taxi_assets.cleaning.prefetch import prefetched


def _threads(name):
    return [t for t in threading.enumerate() if t.name == name]


def test_items_arrive_in_order_and_the_thread_ends():
    assert list(prefetched(range(1000), depth=3, name="t-order")) == list(range(1000))
    assert not _threads("t-order")


def test_the_producer_runs_ahead_but_no_further_than_depth():
    produced = []

    def slow_consumer_source():
        for i in range(100):
            produced.append(i)
            yield i

    items = prefetched(slow_consumer_source(), depth=4, name="t-depth")
    assert next(items) == 0
    time.sleep(0.3)
    # One item handed out, `depth` queued, one produced and waiting for room.
    assert len(produced) <= 1 + 4 + 1
    items.close()
    assert not _threads("t-depth")


def test_a_producer_error_is_raised_to_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad block")

    got = []
    with pytest.raises(ValueError, match="bad block"):
        for item in prefetched(failing(), depth=2, name="t-error"):
            got.append(item)
    assert got == [1]
    assert not _threads("t-error")


def test_a_consumer_that_stops_early_releases_a_blocked_producer():
    items = prefetched(iter(range(10**9)), depth=2, name="t-stop")
    assert next(items) == 0
    time.sleep(0.2)  # the producer is now blocked on a full queue
    items.close()
    assert not _threads("t-stop")
