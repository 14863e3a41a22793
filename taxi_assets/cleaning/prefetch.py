"""An iterator consumed on one thread while a second thread produces it, a few items ahead.

For pipelines of two stages that release the GIL (Arrow's CSV parser, then casting and the
Parquet encoder): on two cores they overlap. The queue bound keeps memory at `depth` items, and
every hand-off gives up once the consumer stops, so an error downstream never leaves the
producer thread blocked.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterable[T], depth: int, name: str = "prefetch") -> Iterator[T]:
    """Yield `items` in order, produced up to `depth` ahead on a thread called `name`. An exception
    raised while producing is raised here, at the point the consumer reached."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        """Queue an item unless the consumer has stopped; never blocks past a stop."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
