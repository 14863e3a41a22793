"""Running Dagster as users do, for the end-to-end tests and benchmarks/backfill.py: `dagster dev`
on the local instance, and `make serve` (deploy/serve.py) on PostgreSQL. Each yields the
webserver's port once the code location has loaded, and stops everything it started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from taxi_assets_harness.graphql import graphql, location_loaded, wait_until
from taxi_assets_harness.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
TRIP_ASSETS = ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table")


def _running(process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
    return True


@contextlib.contextmanager
def dagster_dev(workdir: Path, env: dict[str, str]) -> Iterator[int]:
    """`make dev` (taxi_assets/dev.py: `dg dev`, webserver and daemon, SQLite instance with
    taxi_assets/dagster.yaml)."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "taxi_assets" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "TAXI_DATA_DIR": str(workdir / "data"), **env}
    with _serving(
        "dagster dev",
        [sys.executable, "-m", "taxi_assets.dev", "-h", "127.0.0.1", "-p", str(port)],
        env,
        workdir / "dev.log",
        port,
    ):
        yield port


@contextlib.contextmanager
def webserver(home: Path, env: dict[str, str], log: Path) -> Iterator[int]:
    """The webserver alone (no daemon: no sensor ticks) on the instance in `home`, loading
    workspace.yaml's code location with `env`; yields its port once the location has loaded."""
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), **env}
    binary = Path(sys.executable).parent / "dagster-webserver"
    with _serving(
        "dagster-webserver", [str(binary), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], env, log, port
    ):
        yield port


@contextlib.contextmanager
def _serving(what: str, command: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[None]:
    """`command` (dagster dev or the webserver) in a session of its own, logging to `log`, until its
    code location has loaded on `port`; stopped with its children after (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: _running(server, log) and location_loaded(port), 180, what)
        yield
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _stop_like_ctrl_c(
    process: subprocess.Popen, what: str, home: Path, log: Path, timeout: float, may_fail: bool = False
) -> None:
    """SIGINT, as Ctrl-C would; raises if it does not exit cleanly (unless `may_fail`) or leaves a
    process of its DAGSTER_HOME behind."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    left = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.strip()
    if (code != 0 and not may_fail) or left:
        raise AssertionError(f"{what} exited with {code}, left running: {left or 'nothing'}\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def make_serve(workdir: Path, pg_url: str, env: dict[str, str], instance_yaml: str | None = None) -> Iterator[int]:
    """deploy/serve.py as `make serve` starts it; stopped with SIGINT, as Ctrl-C would. Raises if
    it does not exit cleanly or leaves a process behind. `instance_yaml` replaces deploy/dagster.yaml."""
    port = free_port()
    home = workdir / "home"
    if instance_yaml is not None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(instance_yaml)
    env = {
        **os.environ,
        "DAGSTER_PG_URL": pg_url,
        "DAGSTER_HOME": str(home),
        "TAXI_DATA_DIR": str(workdir / "data"),
        "DAGSTER_WEBSERVER_PORT": str(port),
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        **env,
    }
    with open(workdir / "serve.log", "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "serve.py")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: _running(serve, workdir / "serve.log") and location_loaded(port), 180, "the deployment")
        yield port
    finally:
        _stop_like_ctrl_c(serve, "make serve", home, workdir / "serve.log", timeout=60)


def launch_backfill(port: int, partitions: list[str], asset_names: tuple[str, ...] = TRIP_ASSETS) -> str:
    """A partition backfill of `asset_names` (the trip assets by default), as the UI's "Materialize"
    over a partition selection."""
    assets = ", ".join(f'{{path: ["{name}"]}}' for name in asset_names)
    launched = graphql(
        port,
        f"mutation {{ launchPartitionBackfill(backfillParams: {{ assetSelection: [{assets}], "
        f"partitionNames: {json.dumps(partitions)} }}) {{ __typename ... on LaunchBackfillSuccess {{ backfillId }} "
        f"... on PythonError {{ message }} }} }}",
    )["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise AssertionError(launched)
    return launched["backfillId"]


def run_worker_pid(port: int, run_id: str) -> int | None:
    """The pid of a run's process, from the launcher's engine event ("Started process for run (pid: N)")."""
    events = graphql(
        port,
        f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ eventConnection {{ events {{ __typename '
        f"... on MessageEvent {{ message }} }} }} }} }} }}",
    )["runOrError"]["eventConnection"]["events"]
    for event in events:
        found = re.search(r"Started process for run \(pid: (\d+)\)", event.get("message") or "")
        if found:
            return int(found.group(1))
    return None


def backfill_runs(port: int, backfill_id: str, limit: int = 1000) -> list[dict]:
    """The runs of backfill `backfill_id`, with status, times, tags and step times."""
    return graphql(
        port,
        f'{{ partitionBackfillOrError(backfillId: "{backfill_id}") {{ ... on PartitionBackfill '
        f"{{ runs(limit: {limit}) {{ runId status startTime endTime tags {{ key value }} "
        f"stepStats {{ startTime endTime }} }} }} }} }}",
    )["partitionBackfillOrError"]["runs"]


def finished_backfill_runs(port: int, backfill_id: str, count: int, timeout: float = 240) -> list[dict]:
    """The backfill's runs once there are `count` of them and every one has finished."""

    def finished():
        found = backfill_runs(port, backfill_id)
        done = [r for r in found if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return found if len(found) == count and len(done) == len(found) else None

    return wait_until(finished, timeout, "the backfill's runs")


def latest_materialization_ms(port: int, asset: str) -> float | None:
    """When the asset ("taxi/zones" for a key of two parts) was last materialized (epoch ms), or None."""
    found = graphql(
        port,
        f"{{ assetOrError(assetKey: {{path: {json.dumps(asset.split('/'))}}}) {{ ... on Asset "
        f"{{ assetMaterializations(limit: 1) {{ timestamp }} }} }} }}",
    )["assetOrError"]
    materializations = found.get("assetMaterializations") or []
    return float(materializations[0]["timestamp"]) if materializations else None


def partitions_materialized(port: int, asset: str) -> int:
    """How many partitions of `asset` the webserver counts as materialized."""
    return graphql(
        port,
        f'{{ assetNodeOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on AssetNode '
        f"{{ partitionStats {{ numMaterialized }} }} }} }}",
    )["assetNodeOrError"]["partitionStats"]["numMaterialized"]


@contextlib.contextmanager
def make_worker(
    workdir: Path, pg_url: str, broker_url: str, env: dict[str, str], may_be_killed: bool = False
) -> Iterator[subprocess.Popen]:
    """deploy/worker.py as `make worker` starts it, with DAGSTER_HOME, TMPDIR, TAXI_DATA_DIR and
    TAXI_WORK_DIR of its own under `workdir`; stopped with SIGINT, as Ctrl-C would. Raises if it
    does not exit cleanly or leaves a process behind (a worker the test killed may exit with an error)."""
    home = workdir / "home"
    for folder in ("tmp", "data", "work"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DAGSTER_PG_URL": pg_url,
        "DAGSTER_CELERY_BROKER_URL": broker_url,
        "DAGSTER_HOME": str(home),
        "TMPDIR": str(workdir / "tmp"),
        "TAXI_DATA_DIR": str(workdir / "data"),
        "TAXI_WORK_DIR": str(workdir / "work"),
        **env,
    }
    with open(workdir / "worker.out", "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "deploy" / "worker.py")], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    log = home / "worker-logs" / "worker.log"
    try:
        wait_until(
            lambda: _running(worker, workdir / "worker.out") and log.exists() and "ready." in log.read_text(),
            120,
            "the Celery worker",
            interval=0.2,
        )
        yield worker
    finally:
        _stop_like_ctrl_c(worker, "make worker", home, workdir / "worker.out", timeout=120, may_fail=may_be_killed)
