"""`make worker`: one Celery worker that runs this code location's runs, on any host that reaches the
broker, PostgreSQL and the target's storage.

    DAGSTER_PG_URL=postgresql://user:password@db:5432/dagster \\
    DAGSTER_CELERY_BROKER_URL=redis://broker:6379/0 make worker

It needs the package, those two URLs and the target's settings (TAXI_TARGET and, for gcp,
GCP_PROJECT, GCS_BUCKET, BQ_DATASET, credentials; for local, the same TAXI_DATA_DIR as the daemon's
host). It writes the instance config into its own DAGSTER_HOME (default TAXI_DATA_DIR/dagster_home_worker)
as `make serve` does, and logs to DAGSTER_HOME/worker-logs/worker.log. Ctrl-C or SIGTERM stops it:
the runs it holds get DAGSTER_CELERY_STOP_SECONDS to finish, then they are cut off (run monitoring
marks them failed and run retries start them again on another worker). A worker that exits on its
own (a remote `shutdown` broadcast, a crash) is started again at once; one that keeps exiting (5
times in 10 minutes) stops `make worker`. Before anything starts, the broker and the result backend
are checked (deploy/broker.py): a non-loopback URL without a password, or a server that cannot be
reached or refuses the credentials, is one line on stderr and exit 2.

Settings (environment):
- DAGSTER_CELERY_CONCURRENCY: runs side by side, default the number of cores;
- DAGSTER_CELERY_MAX_TASKS_PER_CHILD (default 50) and DAGSTER_CELERY_MAX_MEMORY_PER_CHILD_MB
  (default 4096): a pool process is replaced after that many runs, or after a run that left it
  above that resident size, so what one run leaves behind (memory, module state) does not last;
- DAGSTER_CELERY_WORKER_NAME: the Celery node name, default taxi-<pid>@<host> (unique per process).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import broker
from disk_floor import warn_low_space
from preflight import require_postgres
from serve import (
    BIN,
    MAX_RESTARTS,
    RESTART_WINDOW_SECONDS,
    ROOT,
    on_stop_signals,
    private_home,
    service_env,
    write_instance_config,
)
from service_logs import RotatingLog, pump
from service_logs import settings as log_settings

QUEUE = "dagster"  # taxi_celery.QUEUE: the one queue dagster-celery declares


def setting(name: str, default: int) -> int:
    """A whole-number setting of at least 1 from the environment; a bad value stops the worker in one line."""
    value = os.environ.get(name) or str(default)
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise SystemExit(f"{name} must be at least 1, got {number}")
    return number


def main() -> int:
    """`make worker`: check the settings, then run a Celery worker and start it again when it exits."""
    missing = [name for name in ("DAGSTER_PG_URL", "DAGSTER_CELERY_BROKER_URL") if not os.environ.get(name)]
    if missing:
        print(f"set {' and '.join(missing)} (the instance's PostgreSQL, the Celery broker)", file=sys.stderr)
        return 2
    data_dir = Path(os.environ.get("TAXI_DATA_DIR") or ROOT / "data").resolve()
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home_worker").resolve()
    private_home(home)
    warn_low_space(home, data_dir)
    problem = broker.check()  # deploy/broker.py: a broker anyone may write to, or one that cannot be used
    if problem:
        print(problem, file=sys.stderr)
        return 2
    problem = write_instance_config(home)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    require_postgres()  # one line and exit 1 for a DAGSTER_PG_URL PostgreSQL does not accept
    logs = home / "worker-logs"
    logs.mkdir(parents=True, exist_ok=True)
    # A run is one process's work from start to end (the in-process executor: parsing, Parquet,
    # loads), mostly CPU-bound, so one run per core keeps the cores busy without making each run
    # slower; runs that wait on the network most of the time can take more.
    concurrency = setting("DAGSTER_CELERY_CONCURRENCY", os.cpu_count() or 1)
    max_tasks = setting("DAGSTER_CELERY_MAX_TASKS_PER_CHILD", 50)
    max_memory_mb = setting("DAGSTER_CELERY_MAX_MEMORY_PER_CHILD_MB", 4096)
    stop_seconds = setting("DAGSTER_CELERY_STOP_SECONDS", 60)
    name = os.environ.get("DAGSTER_CELERY_WORKER_NAME") or f"taxi-{os.getpid()}@{socket.gethostname()}"
    command = [
        str(BIN / "celery"),
        "--app",
        "taxi_celery:app",
        "worker",
        "--queues",
        QUEUE,
        "--concurrency",
        str(concurrency),
        "--hostname",
        name,
        "--loglevel",
        "INFO",
        "--max-tasks-per-child",
        str(max_tasks),
        "--max-memory-per-child",
        str(max_memory_mb * 1024),  # KiB
        # Imported once by the parent, before the pool forks: a run starts without importing the
        # code location or the instance's storage.
        "--include",
        "taxi_assets.definitions,dagster_postgres",
        "--without-mingle",
        "--without-gossip",
    ]
    env = service_env(home, data_dir)
    # Its output (Celery logs to stderr without --logfile, which does not rotate) into a log that
    # rotates by size (deploy/service_logs.py), one for every Celery worker this loop starts.
    log = RotatingLog(logs / "worker.log", *log_settings())
    print(
        f"Celery worker {name}: {concurrency} runs at once, queue {QUEUE!r}; "
        f"log {logs / 'worker.log'}; Ctrl-C stops it",
        flush=True,
    )
    stop_requested = on_stop_signals()
    restarts: list[float] = []
    while True:
        worker = subprocess.Popen(
            command, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output = pump(worker.stdout, log)
        while worker.poll() is None and not stop_requested.is_set():
            time.sleep(0.2)
        if stop_requested.is_set():
            break
        output.join(timeout=5)
        # Exited on its own: a remote `shutdown` broadcast, a crash. Started again at once, so the
        # host is without a worker only while the new one starts; one that keeps exiting stops here.
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW_SECONDS] + [now]
        if len(restarts) > MAX_RESTARTS:
            print(
                f"the Celery worker exited {len(restarts)} times within {RESTART_WINDOW_SECONDS} s "
                f"(last: {worker.returncode}); stopping, see {logs / 'worker.log'}",
                file=sys.stderr,
            )
            return worker.returncode or 1
        print(f"the Celery worker exited with {worker.returncode}; starting it again", file=sys.stderr, flush=True)
    # Celery's warm shutdown: take no new run, let the running ones finish; then a cold one.
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=stop_seconds)
    except subprocess.TimeoutExpired:
        print(f"runs still going after {stop_seconds} s: stopping them", file=sys.stderr)
        os.killpg(worker.pid, signal.SIGQUIT)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    output.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
