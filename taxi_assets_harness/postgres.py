"""A throwaway PostgreSQL cluster: Debian's server binaries, a temp folder, a free loopback port.

initdb and postgres refuse to run as root, so as root they run as the `postgres` user (runuser).
Used by the deployment test and benchmarks/backfill.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def postgres_cluster(workdir: Path, database: str = "dagster") -> Iterator[str]:
    """Start a cluster; yield a libpq URL of `database` on it; stop and remove it afterwards."""
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
    subprocess.run(
        _as_server_user([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(workdir / "postgres.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        _as_server_user(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data)]
            + ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                with contextlib.closing(
                    psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                ) as conn:
                    conn.autocommit = True
                    conn.cursor().execute(f'CREATE DATABASE "{database}"')
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{(workdir / 'postgres.log').read_text()}") from None
                time.sleep(0.2)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        server.terminate()  # SIGTERM: smart shutdown once clients are gone; SIGINT after a while
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.send_signal(2)
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(cluster, ignore_errors=True)
