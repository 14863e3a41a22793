"""What a step is doing, in its run's log at INFO: a line with figures at most every
`settings.progress_seconds()` (TAXI_PROGRESS_SECONDS, 5 s by default), and one summary line,
"{action} done: ...", at the end. Figures read as a user reads them: MB, rows with thousands
separators, seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from taxi_assets import settings


def megabytes(size: int) -> str:
    """A size as a user reads it: MB, or KB under a megabyte (a sample file is a few KB)."""
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} KB"


class Progress:
    """`update` logs `{action}: {message}` when the interval has passed since the last line (the
    message is built only then); `done` logs `{action} done: {message}` with the seconds taken."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, action: str, every: float | None = None):
        self.log = log
        self.action = action
        self.every = settings.progress_seconds() if every is None else every
        self.started = self.last = time.monotonic()

    @property
    def seconds(self) -> float:
        """Seconds since the step began."""
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        """A line now (what the step starts doing)."""
        self.log.info(f"{self.action}: {message}")
        self.last = time.monotonic()

    def update(self, message: Callable[[], str]) -> None:
        """A line from `message()` if the last one is at least `every` seconds old; else nothing."""
        if time.monotonic() - self.last >= self.every:
            self.say(message())

    def done(self, message: str) -> None:
        """The step's closing `done:` line, with how long it took."""
        self.log.info(f"{self.action} done: {message} in {self.seconds:,.1f} s")
