"""A throwaway PostgreSQL cluster: Debian's server binaries, a temp folder, a free loopback port.

initdb and postgres refuse to run as root, so as root they run as the `postgres` user (runuser).
Used by the deployment test and benchmarks/backfill.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from taxi_assets_harness.ports import free_port


def server_binaries() -> Path | None:
    """The folder holding initdb and postgres (Debian puts them off the PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """A running throwaway cluster: `url` of its database; `stop()` and `start()` for outages."""

    def __init__(self, binaries: Path, data: Path, port: int, log: Path, database: str, password: str | None = None):
        self.binaries, self.data, self.port, self.log_path, self.database = binaries, data, port, log, database
        self.password = password
        userinfo = f"postgres:{quote(password, safe='')}" if password else "postgres"
        self.url = f"postgresql://{userinfo}@127.0.0.1:{port}/{database}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the server on its port and data folder; return once it accepts connections."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                _as_server_user(
                    [str(self.binaries / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.data)]
                    + ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                with contextlib.closing(self.connect("postgres")):
                    return
            except psycopg2.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.2)

    def connect(self, database: str):
        """A psycopg2 connection to `database` as the superuser."""
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=self.password, dbname=database
        )

    def stop(self, fast: bool = True, timeout: float = 30) -> None:
        """Stop the server: fast (SIGINT to the postmaster: sessions are cut, as `pg_ctl -m fast stop`)
        or smart (SIGTERM: once clients are gone, SIGINT after `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            return
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT if fast else signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(postmaster, signal.SIGINT)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def postgres_server(workdir: Path, database: str = "dagster", password: str | None = None) -> Iterator[PostgresServer]:
    """Start a cluster with `database` on it; yield it; stop and remove it afterwards. With a
    `password`, TCP connections must give it (scram-sha-256); without one, anyone may connect."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    workdir.mkdir(parents=True, exist_ok=True)
    # Outside workdir: pytest's temp folders are private to their owner, and the server runs as
    # the postgres user.
    cluster = Path(tempfile.mkdtemp(prefix="taxi-pg-"))
    data = cluster / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(cluster, "postgres")
        shutil.chown(data, "postgres")
    auth = ["-A", "trust"]
    if password:
        pwfile = cluster / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    subprocess.run(
        _as_server_user([str(binaries / "initdb"), "-D", str(data), *auth, "-U", "postgres", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(binaries, data, free_port(), workdir / "postgres.log", database, password)
    try:
        server.start()
        with contextlib.closing(server.connect("postgres")) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'CREATE DATABASE "{database}"')
        yield server
    finally:
        server.stop(fast=False, timeout=15)
        shutil.rmtree(cluster, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(workdir: Path, database: str = "dagster") -> Iterator[str]:
    """Start a cluster; yield a libpq URL of `database` on it; stop and remove it afterwards."""
    with postgres_server(workdir, database) as server:
        yield server.url
