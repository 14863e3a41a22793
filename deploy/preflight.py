"""Checks `make serve` and `make worker` run before they start anything: a bad setting is one line on
stderr naming the setting, the host and port, and what the server said, and a non-zero exit
(instead of a code server, a webserver and a daemon each failing with tracebacks).

    require_postgres()   # DAGSTER_PG_URL parses and PostgreSQL accepts it; DAGSTER_PG_OUTAGE_SECONDS is valid

Passwords are never printed: a message is built from the host, port, database and user, and
anything that still holds the password is masked.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

SETTING = "DAGSTER_PG_URL"
SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")
# The check's connection gives up after this long: an unreachable host (packets dropped) would
# otherwise hold `make serve` for the system's TCP timeout (minutes) before saying anything.
CONNECT_TIMEOUT_SECONDS = 10


def one_line(error: BaseException) -> str:
    """An error's message on one line (its type name when it has none)."""
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
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES or "://" not in url:
        return f"{SETTING} must be a postgresql:// URL, got scheme {scheme!r}"
    import sqlalchemy

    # Parsed as the storages parse it (SQLAlchemy's URL, the psycopg2 driver): their password is
    # everything between the first ':' and the next '@', so a raw '#', '/' or '?' in it works; an '@'
    # does not (what follows it is read as the host), nor does a ':' or '/' in the user name.
    sqlalchemy_url = "postgresql+psycopg2://" + url.partition("://")[2]
    raw_password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
    secrets = [raw_password, unquote(raw_password)]
    encode = "percent-encode it (@ as %40, : as %3A, / as %2F, # as %23, ? as %3F, % as %25)"
    try:
        parsed = sqlalchemy.engine.make_url(sqlalchemy_url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # their text repeats the URL, password included
        return (
            f"{SETTING} cannot be parsed as postgresql://user:password@host:port/database: check its port, or {encode}"
        )
    secrets.append(parsed.password or "")
    if "@" in (parsed.host or "") or url.partition("://")[2].count("@") > 1:
        return f"{SETTING} cannot be parsed: its password (or user name) holds an '@'; {encode}"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"{SETTING} has a bad port: {parsed.port} (expected 1-65535)"
    host, port = parsed.host or "localhost (socket)", parsed.port or 5432
    where = f"{SETTING}: PostgreSQL at {host}:{port}/{parsed.database or parsed.username or ''} as {parsed.username}"
    engine = sqlalchemy.create_engine(
        parsed,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        engine.connect().close()
    except sqlalchemy.exc.DBAPIError as error:  # its text adds SQLAlchemy's notes: the driver's alone
        said = one_line(error.orig or error)
        for prefix in (f'connection to server at "{host}"', "connection to server on socket"):
            if said.startswith(prefix):  # libpq repeats the host and port: keep what the server said
                said = said.split("failed: ", 1)[-1]
        return _masked(f"{where}: {said}", secrets)
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    """Exit non-zero with one line on stderr unless PostgreSQL accepts DAGSTER_PG_URL."""
    problem = postgres_problem(os.environ.get(SETTING))
    if problem:
        raise SystemExit(problem)
