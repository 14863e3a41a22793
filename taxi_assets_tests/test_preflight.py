"""`make serve` and `make worker` refuse a DAGSTER_PG_URL that PostgreSQL will not take before they
start anything: one line on stderr naming the setting, the host and port and what the server said,
a non-zero exit, and the password nowhere in their output. Against a real PostgreSQL server that
asks for a password (deploy/preflight.py)."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from taxi_assets_harness.ports import free_port
from taxi_assets_harness.postgres import postgres_server, server_binaries
from taxi_assets_harness.redis import redis_binary, redis_server

pytestmark = pytest.mark.skipif(
    server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
)
ROOT = Path(__file__).resolve().parents[1]
# The server's password holds the characters a URL must percent-encode.
PASSWORD = "Tx#9/s3cret?PW"
ENCODED = quote(PASSWORD, safe="")
WRONG = "Wr0ng-Pa55word"


def _variants(port: int) -> dict[str, tuple[str, str]]:
    """name: (DAGSTER_PG_URL, what its one line must say)."""
    closed = free_port()
    refused = f'127.0.0.1:{port}/dagster as postgres: FATAL: password authentication failed for user "postgres"'
    return {
        "bad port number": (f"postgresql://postgres:{ENCODED}@127.0.0.1:99999/dagster", "bad port: 99999"),
        "port not a number": (f"postgresql://postgres:{ENCODED}@127.0.0.1:54x2/dagster", "cannot be parsed"),
        # Read as the storages read it (everything up to the '@' is the password): refused as wrong.
        "'#' and '/' unencoded": (f"postgresql://postgres:{WRONG}#/x?y@127.0.0.1:{port}/dagster", refused),
        "'@' unencoded": (f"postgresql://postgres:{WRONG}@x@127.0.0.1:{port}/dagster", "percent-encode it"),
        "closed port": (
            f"postgresql://postgres:{ENCODED}@127.0.0.1:{closed}/dagster",
            f"127.0.0.1:{closed}/dagster as postgres: Connection refused",
        ),
        "wrong password": (f"postgresql://postgres:{WRONG}@127.0.0.1:{port}/dagster", refused),
        "missing database": (
            f"postgresql://postgres:{ENCODED}@127.0.0.1:{port}/nosuchdb",
            f'127.0.0.1:{port}/nosuchdb as postgres: FATAL: database "nosuchdb" does not exist',
        ),
    }


@pytest.mark.skipif(redis_binary() is None, reason="redis-server not installed (the worker needs a broker)")
def test_a_bad_postgres_url_is_one_line_naming_setting_host_port_and_cause(tmp_path, monkeypatch):
    with postgres_server(tmp_path / "pg", password=PASSWORD) as pg, redis_server(tmp_path / "redis") as redis:
        started = {}
        variants = _variants(pg.port)
        for name, (url, _) in variants.items():
            for script in ("serve.py", "worker.py"):
                home = tmp_path / f"{script}-{len(started)}"
                env = {
                    **os.environ,
                    "DAGSTER_PG_URL": url,
                    "DAGSTER_CELERY_BROKER_URL": redis.url,  # the worker's other required setting, a real broker
                    "DAGSTER_HOME": str(home / "home"),
                    "TAXI_DATA_DIR": str(home / "data"),
                }
                env.pop("DAGSTER_WEBSERVER_HOST", None)
                process = subprocess.Popen(
                    [sys.executable, str(ROOT / "deploy" / script)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                started[(name, script)] = (process, home)
        # Nothing listens, logs or runs: each stops before starting a process.
        expected = {name: said for name, (_, said) in variants.items()}
        for (name, script), (process, home) in started.items():
            out, err = process.communicate(timeout=120)
            lines = [line for line in (out + err).splitlines() if line.strip()]
            assert process.returncode != 0, (name, script, out, err)
            assert len(lines) == 1, (name, script, lines)
            assert lines[0].startswith("DAGSTER_PG_URL"), (name, script, lines)
            assert expected[name] in lines[0], (name, script, lines)
            for secret in (PASSWORD, ENCODED, WRONG, "s3cret"):
                assert secret not in out + err, (name, script)
            assert not (home / "home" / "serve-logs" / "daemon.log").exists()
            assert not (home / "home" / "worker-logs").exists()

        # The right password is accepted percent-encoded, and also raw: the storages' parser
        # (SQLAlchemy's) reads '#', '/' and '?' in a password as they are, and so does the check.
        monkeypatch.syspath_prepend(str(ROOT / "deploy"))
        from preflight import postgres_problem

        assert ENCODED in pg.url
        assert postgres_problem(pg.url) is None
        assert postgres_problem(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/dagster") is None


def test_a_bad_outage_bound_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "serve.py")],
        env={
            **os.environ,
            "DAGSTER_PG_URL": "postgresql://postgres@127.0.0.1:1/dagster",
            "DAGSTER_PG_OUTAGE_SECONDS": "soon",
            "DAGSTER_HOME": str(tmp_path / "home"),
            "TAXI_DATA_DIR": str(tmp_path / "data"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert (done.stdout + done.stderr).strip() == "DAGSTER_PG_OUTAGE_SECONDS must be a number of seconds, got 'soon'"
