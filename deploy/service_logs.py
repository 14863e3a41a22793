"""The service logs of `make serve` and `make worker`, rotated by size.

Each child's stdout and stderr come through a pipe (`pump`) into a `RotatingLog`: past
TAXI_SERVICE_LOG_MAX_MB the file becomes `NAME.log.1` (the older ones shift up to
`NAME.log.{TAXI_SERVICE_LOG_KEEP}`, the oldest goes) and a new one starts. It works for processes
that are restarted (a new pipe, the same log) and for what their children write (runs launched by
the code server inherit its pipe). A write that fails (a full disk) is said on this process's
stderr, naming the file and the bytes free, once per episode; the bytes lost are counted and noted
in the log when it can be written again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from taxi_assets.disk import space_left

# A service log is rotated at a size that holds days of an idle daemon's output, and a few old
# files keep weeks of it, in little space (figures: docs/deploy.md#disk-logs-and-retention).
DEFAULT_MAX_MB, DEFAULT_KEEP = 20.0, 5
LINE_LIMIT = 64 * 1024  # a line longer than this is written in pieces (no unbounded read)
REPORT_EVERY_SECONDS = 600  # while writes keep failing, say it again this often


def settings() -> tuple[int, int]:
    """(max bytes, files kept) from TAXI_SERVICE_LOG_MAX_MB and TAXI_SERVICE_LOG_KEEP."""
    raw_size = os.environ.get("TAXI_SERVICE_LOG_MAX_MB") or str(DEFAULT_MAX_MB)
    raw_keep = os.environ.get("TAXI_SERVICE_LOG_KEEP") or str(DEFAULT_KEEP)
    try:
        size, keep = float(raw_size), int(raw_keep)
    except ValueError:
        raise SystemExit(
            f"TAXI_SERVICE_LOG_MAX_MB must be a number and TAXI_SERVICE_LOG_KEEP a whole number, got "
            f"{raw_size!r} and {raw_keep!r}"
        ) from None
    if size <= 0 or keep < 1:
        raise SystemExit(
            f"TAXI_SERVICE_LOG_MAX_MB must be above 0, TAXI_SERVICE_LOG_KEEP at least 1: got {raw_size!r}, {raw_keep!r}"
        )
    return max(int(size * 1024 * 1024), 1), keep


class RotatingLog:
    """An append-only log file that rotates past `max_bytes`, keeping `keep` older files."""

    def __init__(self, path: Path, max_bytes: int, keep: int, report: IO[str] = sys.stderr):
        self.path, self.max_bytes, self.keep, self.report = path, max_bytes, keep, report
        self.lock = threading.Lock()
        self.file: IO[bytes] | None = None
        self.size = 0
        self.lost = 0  # bytes not written since writes began to fail
        self.cut = False  # the file ends in the middle of a line
        self.error: OSError | None = None  # the last write's failure
        self.reported_at: float | None = None

    def _open(self) -> IO[bytes]:
        if self.file is None:
            self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open between writes)
            self.size = self.file.seek(0, os.SEEK_END)
        return self.file

    def _close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _rotate(self) -> None:
        self._close()
        for number in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _write_all(self, data: bytes) -> int:
        """Write `data`; return the bytes of it not written (a failure sets self.error)."""
        view = memoryview(data)
        try:
            file = self._open()
            while view:
                written = file.write(view)
                self.size += written
                view = view[written:]
        except OSError as exc:
            self.error = exc
            self.cut = self.cut or len(view) < len(data)  # the file ends in the middle of a line
            self._close()
        return len(view)

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first past `max_bytes`; output that cannot be written is counted and reported."""
        with self.lock:
            self.error = None
            try:
                if self.size and self.size + len(data) > self.max_bytes:
                    self._rotate()
            except OSError as exc:
                self.error = exc
            if self.error is None and self.lost:
                note = f"{self.lost:,} bytes of output were lost: {self.path} could not be written"
                if not self._write_all(("\n" if self.cut else "").encode() + f"[{note}]\n".encode()):
                    print(f"{self.path} is written again; {note}", file=self.report, flush=True)
                    self.lost, self.cut, self.reported_at = 0, False, None
            self.lost += self._write_all(data) if self.error is None else len(data)
            if self.error is not None:
                now = time.monotonic()
                if self.reported_at is None or now - self.reported_at > REPORT_EVERY_SECONDS:
                    self.reported_at = now
                    reason = self.error.strerror or self.error
                    print(
                        f"cannot write {self.path}: {reason}; {space_left(self.path.parent)}; "
                        "its output is lost until there is room",
                        file=self.report,
                        flush=True,
                    )

    def close(self) -> None:
        """Close the current file."""
        with self.lock:
            self._close()


def pump(stream: IO[bytes], log: RotatingLog) -> threading.Thread:
    """Copy `stream` (a child's stdout) into `log` line by line until its end, in a thread."""

    def run() -> None:
        with stream:
            for line in iter(lambda: stream.readline(LINE_LIMIT), b""):
                log.write(line)

    thread = threading.Thread(target=run, name=f"log-{log.path.name}", daemon=True)
    thread.start()
    return thread
