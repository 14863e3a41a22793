"""`make serve`: the production instance's three processes on one machine, against PostgreSQL.

    DAGSTER_PG_URL=postgresql://user:password@host:5432/dagster make serve

Starts a code server (gRPC) for `taxi_assets.definitions`, the webserver (127.0.0.1 and
DAGSTER_WEBSERVER_PORT, default 3000: it has no authentication, so bind it elsewhere only behind
one, with DAGSTER_WEBSERVER_HOST) and the daemon (run queue, sensors, backfills, run monitoring and
retries), each logging to `$DAGSTER_HOME/serve-logs/`. What they write is private to the user
(umask 077; DAGSTER_HOME created 0700); a DAGSTER_WEBSERVER_HOST beyond loopback gets a warning.
Ctrl-C (or SIGTERM) stops all three. One that exits on its own is started again; one that keeps
exiting (5 times in 10 minutes) stops the service.

With DAGSTER_CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0; the result backend is the same
server unless DAGSTER_CELERY_BACKEND_URL says otherwise), runs are Celery tasks that `make worker`
processes run (deploy/celery.yaml, deploy/worker.py) instead of a process each on this machine; the
broker is checked first (deploy/broker.py) and a fourth process fails runs whose task was lost
(deploy/lost_tasks.py).
Every pool's limit is set before anything starts (POOL_LIMITS), so two runs never race to create
a pool's row in PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import broker
import yaml
from disk_floor import warn_low_space
from preflight import require_postgres
from service_logs import RotatingLog, pump
from service_logs import settings as log_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODULE = "taxi_assets.definitions"
LOCATION = "taxi_assets"
# Every pool the assets use, with its limit. Set when the service starts: a pool whose row does not
# exist yet is created by the first step that asks for it, and two runs doing so at the same moment
# fail on PostgreSQL's unique key (seen with Celery workers starting runs side by side).
POOL_LIMITS = {
    "warehouse": 1,  # bq_rides_table, monthly_trip_stats: DuckDB, one writer; BigQuery aborts concurrent transactions
    "upstream": 2,  # raw_trips: concurrent downloads from GitHub, whatever the number of runs
}
# How often the daemon's backfill loop looks at backfills: Dagster fixes it at 30 s (no instance
# setting), so a new backfill's first runs were created up to 30 s after its launch. The daemon is
# started with the backfill loop's interval replaced (DAEMON below); TAXI_BACKFILL_INTERVAL_SECONDS overrides it.
BACKFILL_INTERVAL_SECONDS = 3
# `dagster-daemon run -w ...` with the backfill loop's interval set first, and nothing else of the
# daemon's changed (BACKFILL_INTERVAL in taxi_assets/dagster_internals.py: the legacy asset daemon,
# which reads the same Dagster constant, keeps Dagster's). This is where the daemon's process
# starts, so the patch is made here; a Dagster without the names it needs runs the daemon as
# Dagster ships it, with one warning. Its command line still reads `... dagster-daemon run -w
# WORKSPACE`, as tools and tests look for.
DAEMON = """
import os, sys
from importlib.metadata import entry_points
from taxi_assets.dagster_internals import set_backfill_interval
set_backfill_interval(float(os.environ["TAXI_BACKFILL_INTERVAL_SECONDS"]))
main = next(iter(entry_points(group="console_scripts", name="dagster-daemon"))).load()
sys.argv = sys.argv[1:]
main()
"""
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 600  # a process that keeps dying stops the service


def sqlalchemy_url(url: str) -> str:
    """A libpq URL (postgres:// or postgresql://) with the driver dagster-postgres installs named:
    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+psycopg2"):
        raise SystemExit(f"DAGSTER_PG_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}; see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port} after {timeout:.0f} s; see {log}")


def warn_if_exposed(host: str) -> None:
    """The webserver has no authentication: say so on stderr when it listens beyond loopback."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"WARNING: DAGSTER_WEBSERVER_HOST={host}: the Dagster UI has no authentication; anyone who can reach "
            "this address can launch runs and read run logs. Bind it to 127.0.0.1 and put an authenticating "
            "proxy in front to expose it.",
            file=sys.stderr,
            flush=True,
        )


def private_home(home: Path) -> None:
    """Everything this service and its processes write from now on is private to the user
    (umask 077: folders 0700, files 0600: run logs, compute logs, the instance's files), and
    DAGSTER_HOME is created 0700. An existing home that others can read is reported, not changed."""
    os.umask(0o077)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        print(
            f"note: {home} (DAGSTER_HOME) can be read by others; `chmod 700 {home}` to make it private", file=sys.stderr
        )


def celery_broker() -> str | None:
    """The Celery broker's URL, or None for runs in a process each on this machine."""
    return os.environ.get("DAGSTER_CELERY_BROKER_URL") or None


def instance_config(celery: bool) -> str:
    """The instance's dagster.yaml: deploy/dagster.yaml, plus deploy/celery.yaml's run launcher for Celery."""
    text = (ROOT / "deploy" / "dagster.yaml").read_text()
    return text + "\n" + (ROOT / "deploy" / "celery.yaml").read_text() if celery else text


def _postgres_storage(config: dict) -> bool:
    """`storage: postgres`, or run, event log and schedule storages all PostgreSQL ones."""
    if "postgres" in (config.get("storage") or {}):
        return True
    keys = ("run_storage", "event_log_storage", "schedule_storage")
    modules = [(config.get(key) or {}).get("module") for key in keys]
    return all(module in ("dagster_postgres", "taxi_storage") for module in modules)


def write_instance_config(home: Path) -> str | None:
    """Write DAGSTER_HOME/dagster.yaml if missing; return a problem with an existing one, or None."""
    path, celery = home / "dagster.yaml", bool(celery_broker())
    if not path.exists():
        path.write_text(instance_config(celery))
    text = path.read_text()
    if not _postgres_storage(yaml.safe_load(text) or {}):
        return f"{path} has no PostgreSQL storage; use a DAGSTER_HOME for the deployment"
    if "taxi_storage" not in text:
        print(
            f"note: {path} uses dagster-postgres' storage as it is (a connection per statement, pool claims "
            "retried after 1-15 s): remove it to have deploy/dagster.yaml's written (deploy/taxi_storage.py)",
            file=sys.stderr,
        )
    if celery != ("TaxiCeleryRunLauncher" in text):
        return (
            f"{path} {'lacks' if celery else 'has'} the Celery run launcher but DAGSTER_CELERY_BROKER_URL is "
            f"{'set' if celery else 'not set'}; remove the file to have it written again, or use another DAGSTER_HOME"
        )
    return None


def service_env(home: Path, data_dir: Path) -> dict[str, str]:
    """The environment of the instance's processes (serve.py's three, a worker)."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TAXI_DATA_DIR": str(data_dir),
        "DAGSTER_PG_SQLALCHEMY_URL": sqlalchemy_url(os.environ["DAGSTER_PG_URL"]),
        # deploy/taxi_celery.py, the Celery run launcher the instance names
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "deploy"), os.environ.get("PYTHONPATH")])),
    }
    if celery_broker():
        env["DAGSTER_CELERY_BACKEND_URL"] = os.environ.get("DAGSTER_CELERY_BACKEND_URL") or celery_broker()
    return env


SET_POOL_LIMITS = """
import json, sys
from dagster import DagsterInstance
with DagsterInstance.get() as instance:
    for pool, limit in json.loads(sys.argv[1]).items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
"""


def set_pool_limits(env: dict[str, str]) -> None:
    """Every pool's limit (POOL_LIMITS), in one process (`dagster instance concurrency set` takes one each)."""
    subprocess.run([sys.executable, "-c", SET_POOL_LIMITS, json.dumps(POOL_LIMITS)], env=env, check=True)


def on_stop_signals() -> threading.Event:
    """An event set by Ctrl-C (SIGINT) or SIGTERM, for a service loop that stops its children itself."""
    requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: requested.set())
    return requested


def main() -> int:
    """`make serve`: check the settings and the database, then run and watch the services."""
    if not os.environ.get("DAGSTER_PG_URL"):
        print("set DAGSTER_PG_URL, e.g. postgresql://dagster:secret@127.0.0.1:5432/dagster", file=sys.stderr)
        return 2
    data_dir = Path(os.environ.get("TAXI_DATA_DIR") or ROOT / "data").resolve()
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home_deploy").resolve()
    web_host = os.environ.get("DAGSTER_WEBSERVER_HOST") or "127.0.0.1"
    warn_if_exposed(web_host)
    private_home(home)
    warn_low_space(home, data_dir)
    if celery_broker() and (problem := broker.check()):  # deploy/broker.py: refused or unreachable
        print(problem, file=sys.stderr)
        return 2
    # Not $DAGSTER_HOME/logs: Dagster moves that folder away (its telemetry queue).
    logs = home / "serve-logs"
    logs.mkdir(parents=True, exist_ok=True)
    problem = write_instance_config(home)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    grpc_port = int(os.environ.get("DAGSTER_CODE_SERVER_PORT") or 4266)
    web_port = int(os.environ.get("DAGSTER_WEBSERVER_PORT") or 3000)
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n"
    )
    require_postgres()  # one line and exit 1 for a DAGSTER_PG_URL PostgreSQL does not accept
    env = service_env(home, data_dir)
    env.setdefault("TAXI_BACKFILL_INTERVAL_SECONDS", str(BACKFILL_INTERVAL_SECONDS))
    set_pool_limits(env)

    commands = {
        "code-server": [str(BIN / "dagster"), "code-server", "start", "-m", MODULE, "-h", "127.0.0.1"]
        + ["-p", str(grpc_port), "--location-name", LOCATION],
        "webserver": [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", web_host, "-p", str(web_port)],
        "daemon": [sys.executable, "-c", DAEMON, "dagster-daemon", "run", "-w", str(workspace)],
    }
    if celery_broker():  # a run whose Celery task was lost is failed (and retried) within 30 s
        commands["lost-tasks"] = [sys.executable, str(ROOT / "deploy" / "lost_tasks.py")]
    processes: dict[str, subprocess.Popen] = {}
    # Each child's output, through a pipe, into a log that rotates by size (deploy/service_logs.py).
    outputs = {name: RotatingLog(logs / f"{name}.log", *log_settings()) for name in commands}
    pumps: list[threading.Thread] = []

    def stop(*_args) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 30
        for process in processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stop_requested = on_stop_signals()

    def start(name: str) -> None:
        processes[name] = subprocess.Popen(
            commands[name], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        pumps.append(pump(processes[name].stdout, outputs[name]))

    restarts: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for name in commands:
            start(name)
            if name == "code-server":
                _wait_for_port(grpc_port, processes[name], logs / f"{name}.log")
        _wait_for_port(web_port, processes["webserver"], logs / "webserver.log")
        launcher = "runs on Celery workers (`make worker`)" if celery_broker() else "a process per run"
        print(f"Dagster UI: http://{web_host}:{web_port}  (instance: {home / 'dagster.yaml'}, PostgreSQL, {launcher})")
        print(f"logs: {logs}/{{{','.join(commands)}}}.log; Ctrl-C stops them all", flush=True)
        while not stop_requested.is_set():
            for name, process in list(processes.items()):
                if process.poll() is None or stop_requested.is_set():
                    continue
                # A process that died (killed, out of memory) is started again: the instance keeps
                # all state, so the daemon picks up its queue, sensors and backfills where they were.
                now = time.monotonic()
                recent = [t for t in restarts[name] if now - t < RESTART_WINDOW_SECONDS] + [now]
                restarts[name] = recent
                if len(recent) > MAX_RESTARTS:
                    print(
                        f"{name} exited {len(recent)} times within {RESTART_WINDOW_SECONDS} s; stopping (see {logs})",
                        file=sys.stderr,
                    )
                    return 1
                print(f"{name} exited with {process.returncode}; starting it again", file=sys.stderr, flush=True)
                start(name)
            time.sleep(0.5)
        return 0
    finally:
        stop()
        for thread in pumps:  # what the processes wrote last (runs they started may still write)
            thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
