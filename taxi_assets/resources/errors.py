"""Errors of the storage resources that retrying cannot fix."""


class SetupError(Exception):
    """A problem of configuration or permissions (a missing bucket, a 403, incompatible
    locations): the run fails at once instead of retrying, with a message that says the fix."""


class AccessDenied(SetupError):
    """The service refused the identity (HTTP 403); the message names the permission needed."""
