"""Checks `make serve` and `make worker` run before they start anything: a bad setting is one line on
stderr naming the setting, the host and port, and what the server said, and a non-zero exit
(instead of a code server, a webserver and a daemon each failing with tracebacks).

    require_postgres()   # DAGSTER_PG_URL parses and PostgreSQL accepts it; DAGSTER_PG_OUTAGE_SECONDS is valid

Passwords are never printed: a message is built from the host, port, database and user, and
anything that still holds the password is masked.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

SETTING = "DAGSTER_PG_URL"
SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")
# The check's connection gives up after this long: an unreachable host (packets dropped) would
# otherwise hold `make serve` for the system's TCP timeout (minutes) before saying anything.
CONNECT_TIMEOUT_SECONDS = 10


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _masked(text: str, secrets: list[str]) -> str:
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def postgres_problem(url: str | None) -> str | None:
    """One line saying what is wrong with the PostgreSQL URL `url` (DAGSTER_PG_URL), or None when
    PostgreSQL accepts it."""
    if not url:
        return f"{SETTING} is not set: e.g. postgresql://dagster:secret@127.0.0.1:5432/dagster"
    # taxi_storage.OUTAGE_SETTING, checked by taxi_storage (imported only when set: it imports dagster)
    if os.environ.get("DAGSTER_PG_OUTAGE_SECONDS"):
        from taxi_storage import outage_seconds

        try:
            outage_seconds()
        except ValueError as error:
            return str(error)
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return f"{SETTING} must be a postgresql:// URL, got scheme {parts.scheme!r}"
    # The password is whatever lies between the first ':' after '//' and the last '@' of the URL: a
    # '#', '/' or '?' in it ends the URL's host part early, and the rest is not a host.
    raw_userinfo = url.split("//", 1)[-1].rpartition("@")[0]
    raw_password = raw_userinfo.partition(":")[2]
    secrets = [raw_password, unquote(raw_password)]
    if "@" in url.split("//", 1)[-1] and "@" not in parts.netloc or any(c in raw_password for c in "#/?"):
        return (
            f"{SETTING} cannot be parsed: its password holds '#', '/' or '?'; percent-encode them "
            "(# as %23, / as %2F, ? as %3F, @ as %40, % as %25)"
        )
    try:
        port = parts.port or 5432
    except ValueError as error:
        return f"{SETTING} has a bad port: {_masked(str(error), secrets)} (expected 1-65535)"
    host = parts.hostname or "localhost (socket)"
    database = unquote(parts.path.lstrip("/")) or (unquote(parts.username or "") or "(default)")
    where = f"{SETTING}: PostgreSQL at {host}:{port}/{database} as {unquote(parts.username or '') or '(default user)'}"
    import psycopg2

    libpq_url = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        psycopg2.connect(libpq_url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    except psycopg2.Error as error:
        said = one_line(error)
        for prefix in (f'connection to server at "{host}"', "connection to server on socket"):
            if said.startswith(prefix):  # libpq repeats the host and port: keep what the server said
                said = said.split("failed: ", 1)[-1]
        return _masked(f"{where}: {said}", secrets)
    return None


def require_postgres() -> None:
    """Exit non-zero with one line on stderr unless PostgreSQL accepts DAGSTER_PG_URL."""
    problem = postgres_problem(os.environ.get(SETTING))
    if problem:
        raise SystemExit(problem)
