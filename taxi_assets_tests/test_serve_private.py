"""`make serve` (deploy/serve.py) keeps what it and its processes write private to the user, and
warns when the UI, which has no authentication, listens beyond loopback. Fast: no PostgreSQL (the
deployment itself is tested in test_deploy.py, marked slow)."""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "deploy" / "serve.py"


def _modes(home: Path) -> dict[str, int]:
    return {str(p.relative_to(home)): stat.S_IMODE(p.stat().st_mode) for p in [home, *home.rglob("*")]}


def _serve(tmp_path: Path, host: str | None) -> subprocess.CompletedProcess:
    """serve.py up to the moment it needs the database: a URL it refuses stops it there, after it
    has made its home and files (an open umask, as a user's shell often has)."""
    env = {
        **os.environ,
        "DAGSTER_PG_URL": "mysql://not-postgres/dagster",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "TAXI_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("DAGSTER_WEBSERVER_HOST", None)
    if host is not None:
        env["DAGSTER_WEBSERVER_HOST"] = host
    return subprocess.run(
        [sys.executable, str(SERVE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "127.0.0.1", None])
def test_a_webserver_beyond_loopback_is_warned_about_on_stderr(tmp_path, host):
    done = _serve(tmp_path, host)
    assert "DAGSTER_PG_URL must be a postgresql:// URL" in done.stderr  # stopped where expected
    if host in ("0.0.0.0", "192.168.1.5"):
        assert f"WARNING: DAGSTER_WEBSERVER_HOST={host}: the Dagster UI has no authentication" in done.stderr
    else:
        assert "WARNING" not in done.stderr
    assert done.stdout == ""


def test_serves_home_and_files_are_private_whatever_the_umask(tmp_path):
    _serve(tmp_path, None)
    modes = _modes(tmp_path / "home")
    assert {"dagster.yaml", "workspace.yaml", "serve-logs"} <= set(modes)
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    assert modes["."] == 0o700


# A process set up as serve.py sets up its own (and with it the code server, the webserver, the
# daemon and every run they launch), then a real run on a Dagster instance in that home.
_RUN_UNDER_SERVE = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from serve import private_home

    private_home(Path(os.environ["DAGSTER_HOME"]))
    run = '''
    import dagster as dg

    @dg.asset
    def logged(context):
        context.log.info("a line for the event log and the compute log")
        return 1

    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([logged], instance=instance).success
    '''
    subprocess.run([sys.executable, "-c", run], check=True)
    """
)


def test_a_runs_event_log_and_storage_under_serves_home_are_not_readable_by_others(tmp_path):
    home = tmp_path / "home"
    subprocess.run(
        [sys.executable, "-c", _RUN_UNDER_SERVE, str(SERVE.parent)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        check=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )
    modes = _modes(home)
    databases = [name for name in modes if name.endswith(".db")]
    assert databases, modes  # the run's records are there: runs, event log
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
