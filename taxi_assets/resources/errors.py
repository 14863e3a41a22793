"""Errors of the storage resources that retrying cannot fix, and how a step reports them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg


class SetupError(Exception):
    """A problem of configuration or permissions (a missing bucket, a 403, incompatible
    locations): the run fails at once instead of retrying, with a message that says the fix."""


class AccessDenied(SetupError):
    """The service refused the identity (HTTP 403); the message names the permission needed."""


@contextlib.contextmanager
def failing_fast(partition: object) -> Iterator[None]:
    """Turn a SetupError into a step failure that names the partition and skips the retry policy:
    retries would only repeat the same refusal."""
    try:
        yield
    except SetupError as exc:
        raise dg.Failure(description=f"partition {partition}: {exc}", allow_retries=False) from exc
