"""The Celery deployment: `make serve` with DAGSTER_CELERY_BROKER_URL (a Redis server of the test's,
no persistence) and two `make worker` processes, each with a DAGSTER_HOME, TMPDIR, TAXI_DATA_DIR
and work folder of its own, on the gcp target against the emulators: nothing may cross through a
local disk, as between hosts. A backfill over GraphQL spreads over both workers; a worker killed
mid-run and a broker restarted mid-backfill lose no slice and double none."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from google.cloud import storage

from taxi_assets_harness.graphql import graphql, max_overlap, runs, wait_until
from taxi_assets_harness.instances import backfill_runs, launch_backfill, make_serve, make_worker
from taxi_assets_harness.postgres import postgres_cluster, server_binaries
from taxi_assets_harness.redis import redis_binary, redis_server
from taxi_assets_tests.conftest import month, published_key, real_rows
from taxi_assets_tests.test_graph_gcp import _slices

pytestmark = [
    pytest.mark.slow,
    pytest.mark.extended,
    pytest.mark.skipif(
        server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
    ),
    pytest.mark.skipif(redis_binary() is None, reason="Redis server not installed (apt-get install redis-server)"),
]
ROOT = Path(__file__).resolve().parents[1]
YELLOW = real_rows("yellow_tripdata_2021-01_head3000.csv")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
WORKER_TAG, PID_TAG, HOST_TAG = "taxi/celery_worker", "taxi/worker_pid", "taxi/worker_host"


def _instance_yaml(**settings: str) -> str:
    """deploy/dagster.yaml with the Celery launcher, as `make serve` writes it, with `old -> new` edits."""
    text = (ROOT / "deploy" / "dagster.yaml").read_text() + "\n" + (ROOT / "deploy" / "celery.yaml").read_text()
    for old, new in settings.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# Run monitoring looks every 2 s instead of 30, to keep the tests short.
FAST_MONITORING = {"poll_interval_seconds: 30": "poll_interval_seconds: 2"}
# And a run no worker took (its message lost with the broker) fails after 40 s instead of 180. Not
# with a worker lost: runs launched beyond the remaining worker's slots wait in the broker, STARTING,
# and a short start timeout fails them (max_concurrent_runs is 4, one worker has 2 slots).
LOST_MESSAGES_FAIL_SOON = {**FAST_MONITORING, "start_timeout_seconds: 180": "start_timeout_seconds: 40"}


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _steps_done(port: int, run_id: str) -> set[str]:
    stats = graphql(port, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ stepStats {{ stepKey status }} }} }} }}')[
        "runOrError"
    ]["stepStats"]
    return {s["stepKey"] for s in stats if s["status"] == "SUCCESS"}


def _publish(mirror, months: list[str], big: str | None = None) -> list[str]:
    mirror.publish_zones()  # the automation sensor loads them after the first slice
    for ym in months:
        mirror.publish("yellow", ym, YELLOW[:1] + YELLOW[1:] * (150 if ym == big else 1))
    return [f"yellow|{ym}-01" for ym in months]


@contextlib.contextmanager
def _celery_deployment(tmp_path: Path, mirror, instance_yaml: str, killable: bool = False):
    """PostgreSQL, Redis, `make serve` with the broker and two `make worker`s. Yields the
    webserver's port, the Redis server and the workers' folders."""
    with (
        postgres_cluster(tmp_path / "pg") as pg_url,
        redis_server(tmp_path / "redis") as broker,
        make_serve(
            tmp_path / "serve",
            pg_url,
            {"TAXI_SOURCE_URL": mirror.base_url, "DAGSTER_CELERY_BROKER_URL": broker.url},
            instance_yaml,
        ) as port,
        make_worker(tmp_path / "w1", pg_url, broker.url, {"DAGSTER_CELERY_CONCURRENCY": "2"}, killable),
        make_worker(tmp_path / "w2", pg_url, broker.url, {"DAGSTER_CELERY_CONCURRENCY": "2"}, killable),
    ):
        yield port, broker, [tmp_path / "w1", tmp_path / "w2"]


def _wait_backfill(port: int, backfill: str, keys: list[str], timeout: float = 400) -> list[dict]:
    """The backfill's runs (retries included) once every partition has a run that succeeded and no
    run is busy (a failed run's retry is launched a few seconds after it failed)."""

    def done():
        found = backfill_runs(port, backfill)
        ok = {_tags(r)["dagster/partition"] for r in found if r["status"] == "SUCCESS"}
        return found if ok == set(keys) and all(r["status"] in FINISHED for r in runs(port)) else None

    return wait_until(done, timeout, "the backfill", interval=2)


def _assert_exact(gcp_emulators, gcp_env, keys: list[str]) -> None:
    expected = {(month(k).color, month(k).ym): 3000 for k in keys}
    assert _slices(gcp_emulators, gcp_env) == expected
    bucket = storage.Client(project=gcp_env["project"]).bucket(gcp_env["bucket"])
    for key in keys:
        blob = bucket.blob(published_key(month(key)))
        assert pq.ParquetFile(io.BytesIO(blob.download_as_bytes())).metadata.num_rows == 3000, key


def test_a_backfill_spreads_over_two_celery_workers(gcp_emulators, gcp_env, mirror, tmp_path):
    keys = _publish(mirror, [f"2020-{m:02d}" for m in range(1, 11)])
    started = time.monotonic()
    with _celery_deployment(tmp_path, mirror, _instance_yaml(**FAST_MONITORING)) as (port, _broker, workers):
        backfill = launch_backfill(port, keys)
        ran = _wait_backfill(port, backfill, keys)
        assert {_tags(r)["dagster/partition"]: r["status"] for r in ran} == dict.fromkeys(keys, "SUCCESS")
        assert len(ran) == len(keys)
        by_worker: dict[str, int] = {}
        for run in ran:
            tags = _tags(run)
            assert tags[HOST_TAG] and int(tags[PID_TAG]) > 0
            by_worker[tags[WORKER_TAG]] = by_worker.get(tags[WORKER_TAG], 0) + 1
        assert len(by_worker) == 2, by_worker  # both workers ran runs
        # The engine event the UI shows in each run's log names its worker.
        events = graphql(
            port,
            f'{{ runOrError(runId: "{ran[0]["runId"]}") {{ ... on Run {{ eventConnection {{ events {{ '
            f"... on MessageEvent {{ message }} }} }} }} }} }}",
        )["runOrError"]["eventConnection"]["events"]
        assert any(f"Running on Celery worker {_tags(ran[0])[WORKER_TAG]}" in (e.get("message") or "") for e in events)
        overlap = max_overlap(ran)
    _assert_exact(gcp_emulators, gcp_env, keys)
    # Each worker's own folders: nothing of the lake or the warehouse is on a local disk.
    for worker in workers:
        assert not list((worker / "data").rglob("*.parquet")) and not list((worker / "data").rglob("*.duckdb"))
    print(f"celery test: {time.monotonic() - started:.0f} s, {by_worker}, at most {overlap} runs at once")


def test_a_worker_killed_mid_run_is_retried_on_the_other(gcp_emulators, gcp_env, mirror, tmp_path):
    """A whole worker (its parent and pool processes) SIGKILLed while it runs the big partition, as a
    host lost: run monitoring asks the worker, finds it gone, marks the run failed; run retries run
    it again, on the other worker; every slice is there exactly once."""
    big = "2020-06"
    keys = _publish(mirror, [f"2020-{m:02d}" for m in range(1, 9)], big=big)
    with _celery_deployment(tmp_path, mirror, _instance_yaml(**FAST_MONITORING), killable=True) as (port, _b, _w):
        backfill = launch_backfill(port, keys)

        def big_run_started():
            for run in runs(port):
                tags = _tags(run)
                if tags.get("dagster/partition") == f"yellow|{big}-01" and run["status"] == "STARTED":
                    return run if PID_TAG in tags else None
            return None

        killed = wait_until(big_run_started, 240, "the big partition's run", interval=0.2)
        pid = int(_tags(killed)[PID_TAG])
        os.killpg(os.getpgid(pid), signal.SIGKILL)  # the worker's whole process group: parent and pool
        ran = _wait_backfill(port, backfill, keys)
        final = runs(port)
        killed_now = next(r for r in final if r["runId"] == killed["runId"])
        assert killed_now["status"] == "FAILURE"  # marked by run monitoring, not left STARTED
        retries = [r for r in final if _tags(r).get("dagster/parent_run_id") == killed["runId"]]
        assert [r["status"] for r in retries] == ["SUCCESS"]
        assert _tags(retries[0])[WORKER_TAG] != _tags(killed)[WORKER_TAG]
        assert {_tags(r)["dagster/partition"] for r in ran if r["status"] == "SUCCESS"} == set(keys)
    expected = {(month(k).color, month(k).ym): 3000 * (150 if month(k).ym == big else 1) for k in keys}
    assert _slices(gcp_emulators, gcp_env) == expected


def test_a_pool_process_killed_mid_step_fails_its_run_and_the_run_is_retried(gcp_emulators, gcp_env, mirror, tmp_path):
    """Only the pool process running the big partition's steps SIGKILLed (out-of-memory killer, a
    crash in native code): its worker lives on, reports the task lost (FAILURE in the result
    backend), and starts a new pool process; the run is marked failed and run again (on either
    worker); every slice is there exactly once."""
    big = "2020-06"
    keys = _publish(mirror, [f"2020-{m:02d}" for m in range(1, 7)], big=big)
    with _celery_deployment(tmp_path, mirror, _instance_yaml(**FAST_MONITORING)) as (port, _b, workers):
        backfill = launch_backfill(port, keys)

        def big_run_in_its_steps():
            for run in runs(port):
                tags = _tags(run)
                if tags.get("dagster/partition") == f"yellow|{big}-01" and run["status"] == "STARTED":
                    return run if PID_TAG in tags and "raw_trips" in _steps_done(port, run["runId"]) else None
            return None

        killed = wait_until(big_run_in_its_steps, 240, "the big partition's steps", interval=0.2)
        os.kill(int(_tags(killed)[PID_TAG]), signal.SIGKILL)  # the pool process only
        ran = _wait_backfill(port, backfill, keys)
        final = runs(port)
        assert next(r for r in final if r["runId"] == killed["runId"])["status"] == "FAILURE"
        retries = [r for r in final if _tags(r).get("dagster/parent_run_id") == killed["runId"]]
        assert [r["status"] for r in retries] == ["SUCCESS"]
        assert {_tags(r)["dagster/partition"] for r in ran if r["status"] == "SUCCESS"} == set(keys)
        logs = "".join((w / "home" / "worker-logs" / "worker.log").read_text() for w in workers)
        assert "WorkerLostError" in logs or "exited with 'signal 9 (SIGKILL)'" in logs
    expected = {(month(k).color, month(k).ym): 3000 * (150 if month(k).ym == big else 1) for k in keys}
    assert _slices(gcp_emulators, gcp_env) == expected


def test_a_broker_restarted_mid_backfill_loses_nothing(gcp_emulators, gcp_env, mirror, tmp_path):
    """Redis stopped and started again (empty: no persistence) while a backfill runs: queued runs'
    messages and task states are lost; runs a worker holds finish; lost ones fail on the start
    timeout and are retried. Every slice is there exactly once."""
    keys = _publish(mirror, [f"2020-{m:02d}" for m in range(1, 11)])
    with _celery_deployment(tmp_path, mirror, _instance_yaml(**LOST_MESSAGES_FAIL_SOON)) as (port, broker, workers):
        backfill = launch_backfill(port, keys)
        wait_until(lambda: sum(r["status"] == "SUCCESS" for r in backfill_runs(port, backfill)) >= 2, 240, "2 runs")
        broker.restart()
        ran = _wait_backfill(port, backfill, keys, timeout=500)
        assert {_tags(r)["dagster/partition"] for r in ran if r["status"] == "SUCCESS"} == set(keys)
        for worker in workers:  # both lost the broker and came back to it
            assert "Connection to broker lost" in (worker / "home" / "worker-logs" / "worker.log").read_text()
    _assert_exact(gcp_emulators, gcp_env, keys)
