"""Errors of the storage resources that retrying cannot fix, and how a step reports them."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from taxi_assets.disk import space_left


class SetupError(Exception):
    """A problem of configuration or permissions (a missing bucket, a 403, incompatible
    locations): the run fails at once instead of retrying, with a message that says the fix."""


class AccessDenied(SetupError):
    """The service refused the identity (HTTP 403); the message names the permission needed."""


class CannotWrite(SetupError):
    """The disk is full (or the file too large, the folder read-only): the message names the path."""


_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """A write to `path` that fails for lack of room or rights becomes CannotWrite naming it (an
    OSError from a write call knows no file name, and Arrow's knows no errno)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _CANNOT_WRITE or "No space left on device" in str(exc):
            reason = exc.strerror or str(exc)
            room = f"; {space_left(path)}" if exc.errno in (errno.ENOSPC, errno.EDQUOT, None) else ""
            raise CannotWrite(f"cannot write {path}: {reason}{room}; the previous files are kept") from exc
        raise


@contextlib.contextmanager
def failing_fast(partition: object) -> Iterator[None]:
    """Turn a SetupError into a step failure that names the partition and skips the retry policy:
    retries would only repeat the same refusal."""
    try:
        yield
    except SetupError as exc:
        raise dg.Failure(description=f"partition {partition}: {exc}", allow_retries=False) from exc
