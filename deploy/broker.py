"""The Celery broker and result backend, checked before `make serve` or `make worker` starts anything.

Whoever can write to the broker can run, stop and steer this deployment's runs (and forge the
workers' replies), so credentials are the defence:

- a broker or result-backend URL whose host is not loopback and that carries no password is
  refused; a non-loopback `redis://` (no TLS) gets a one-line warning: its password and messages
  cross the network in clear;
- the server is then asked for real (connect, AUTH, PING, with a short timeout): unreachable,
  refused, a wrong password or an ACL that denies the user is one line naming the setting, the
  host and port and what the server said.

`check()` returns that line (or None); serve.py and worker.py print it and exit non-zero. No line
ever holds a password: URLs are shown as scheme://host:port.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

BROKER, BACKEND = "DAGSTER_CELERY_BROKER_URL", "DAGSTER_CELERY_BACKEND_URL"
# Long enough for a broker across a WAN and a TLS handshake, short enough that a wrong address
# fails `make serve` at once (the Celery client's own retries held each launch for many seconds).
CHECK_TIMEOUT_SECONDS = 5.0
SCHEMES = ("redis", "rediss", "redis+socket", "socket")
# Query parameters Celery and kombu read for TLS (rediss://...?ssl_cert_reqs=required&ssl_ca_certs=...).
SSL_PARAMETERS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"cert_required": "required", "cert_optional": "optional", "cert_none": "none"}


@dataclass(frozen=True)
class Endpoint:
    """A Celery broker or result backend URL, split into its parts (the password kept, never shown)."""

    setting: str
    scheme: str
    host: str
    port: int | None
    username: str | None
    password: str | None
    db: int
    query: dict[str, str]

    @property
    def where(self) -> str:
        """scheme://host:port (or the socket's path): never the credentials."""
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")

    @property
    def local(self) -> bool:
        """Whether it is on this host (loopback, localhost or a Unix socket): a Redis there needs no TLS."""
        if self.scheme in ("redis+socket", "socket") or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a name: it may resolve anywhere
            return False


def endpoints() -> list[Endpoint] | str:
    """The broker's and the result backend's servers (each URL of a `;` failover list), or a problem."""
    found: list[Endpoint] = []
    seen: set[str] = set()
    for setting in (BROKER, BACKEND):
        value = os.environ.get(setting) or ""
        for url in filter(None, (part.strip() for part in value.split(";"))):
            if url in seen:  # the backend defaults to the broker's server
                continue
            seen.add(url)
            parsed = parse(setting, url)
            if isinstance(parsed, str):
                return parsed
            found.append(parsed)
    return found


def parse(setting: str, url: str) -> Endpoint | str:
    """The Endpoint `url` (from the variable `setting`) names, or a message saying what is wrong, naming no secret."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port, or a password with / # ? @ not %-encoded (not echoed: it may hold one)
        return f"{setting}: not a valid URL (is the port a number? %-encode / # ? @ in a password)"
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        return f"{setting}: scheme {scheme or 'none'}:// is not supported here; use redis:// or rediss:// (Redis)"
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if scheme in ("redis+socket", "socket"):
        host, port, db = parts.path, None, int(query.get("virtual_host") or query.get("db") or 0)
    else:
        host, db_text = parts.hostname or "localhost", parts.path.strip("/")
        if not db_text.isdigit() and db_text:
            return f"{setting}: {scheme}://{host}: the database must be a number, got {db_text!r}"
        db, port = int(db_text or 0), port or 6379
    return Endpoint(
        setting,
        scheme,
        host,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        db,
        query,
    )


def policy(endpoint: Endpoint) -> tuple[str | None, str | None]:
    """(a refusal, a warning) for an endpoint's URL, before any connection."""
    if endpoint.local:
        return None, None
    if not endpoint.password:
        return (
            f"{endpoint.setting}: {endpoint.where} is not on this host and has no password: anyone who reaches it "
            "can run and steer this deployment's runs; use a Redis ACL user and password "
            "(redis[s]://USER:PASSWORD@host:port/0, docs/deploy.md#the-broker)",
            None,
        )
    if endpoint.scheme == "redis":
        return None, (
            f"WARNING: {endpoint.setting}: {endpoint.where} is not TLS: its password and the runs' messages cross "
            "the network in clear; use rediss:// (docs/deploy.md#the-broker)"
        )
    reqs = (endpoint.query.get("ssl_cert_reqs") or "").lower()
    if CERT_REQS.get(reqs, reqs) != "required":
        return None, (
            f"WARNING: {endpoint.setting}: {endpoint.where} does not verify the server's certificate: add "
            "?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem (docs/deploy.md#the-broker)"
        )
    return None, None


def ping(endpoint: Endpoint, timeout: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """Connect, AUTH and PING; None when the server answers PONG, else one line saying why not."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One attempt: this is a check, the worker and the launcher have their own retries.
    options: dict = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "db": endpoint.db}
    options["retry"] = Retry(NoBackoff(), 0)
    if endpoint.username:
        options["username"] = endpoint.username
    if endpoint.password:
        options["password"] = endpoint.password
    if endpoint.scheme in ("redis+socket", "socket"):
        client = redis.Redis(unix_socket_path=endpoint.host, **options)
    else:
        if endpoint.scheme == "rediss":
            options["ssl"] = True
            for key in SSL_PARAMETERS:
                if endpoint.query.get(key):
                    options[key] = endpoint.query[key]
            if "ssl_cert_reqs" in options:
                value = options["ssl_cert_reqs"].lower()
                options["ssl_cert_reqs"] = CERT_REQS.get(value, value)
            else:
                options["ssl_cert_reqs"] = "none"  # what kombu does without it (and warns about)
        client = redis.Redis(host=endpoint.host, port=endpoint.port, **options)
    try:
        client.ping()
        return None
    except redis.exceptions.AuthenticationError as error:
        said = f"refused the credentials: {error}"
    except redis.exceptions.NoPermissionError as error:
        said = f"denied the user (Redis ACL): {error}"
    except redis.exceptions.TimeoutError as error:
        said = f"did not answer within {timeout:.0f} s: {error}"
    except redis.exceptions.ConnectionError as error:
        said = f"cannot be reached: {error}"
    except (redis.exceptions.RedisError, OSError, ValueError) as error:
        said = f"answered with an error: {error}"
    finally:
        client.close()
    text = " ".join(said.split())  # one line, whatever the server or the OS said
    if endpoint.password:  # never echoed, even if a message ever carried it
        text = text.replace(endpoint.password, "***")
    return f"{endpoint.setting}: {endpoint.where} {text}"


def check(timeout: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """The broker and result backend URLs, refused or checked for real: None when they are usable,
    else one line to print before exiting. Warnings go to stderr as they are found."""
    found = endpoints()
    if isinstance(found, str):
        return found
    for endpoint in found:
        refusal, warning = policy(endpoint)
        if refusal:
            return refusal
        if warning:
            print(warning, file=sys.stderr, flush=True)
    for endpoint in found:
        problem = ping(endpoint, timeout)
        if problem:
            return problem
    return None
