"""The Celery deployment's configuration, without Redis: what `make serve` and `make worker` write
into DAGSTER_HOME with and without DAGSTER_CELERY_BROKER_URL, the launcher it names, the broker
URLs they refuse or warn about (one of them through make serve and make worker, on PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from taxi_assets_harness.postgres import postgres_cluster, server_binaries

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import serve  # noqa: E402


def test_without_a_broker_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL", raising=False)
    assert serve.write_instance_config(tmp_path) is None
    assert (tmp_path / "dagster.yaml").read_text() == (ROOT / "deploy" / "dagster.yaml").read_text()


def test_with_a_broker_the_instance_runs_on_celery(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("DAGSTER_CELERY_BACKEND_URL", raising=False)
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u@127.0.0.1:5432/dagster")
    assert serve.write_instance_config(tmp_path) is None
    config = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert config["run_launcher"] == {
        "module": "taxi_celery",
        "class": "TaxiCeleryRunLauncher",
        "config": {
            "default_queue": "dagster",
            "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
            "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
        },
    }
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    env = serve.service_env(tmp_path, tmp_path / "data")
    assert env["DAGSTER_CELERY_BACKEND_URL"] == "redis://127.0.0.1:6379/0"  # the broker's server by default
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT / "deploy")


@pytest.mark.parametrize("broker_then", [True, False])
def test_a_home_written_for_the_other_launcher_is_refused(tmp_path, monkeypatch, broker_then):
    if broker_then:
        monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    else:
        monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL", raising=False)
    assert serve.write_instance_config(tmp_path) is None
    if broker_then:
        monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL")
    else:
        monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    problem = serve.write_instance_config(tmp_path)
    assert problem and "Celery run launcher" in problem and "DAGSTER_CELERY_BROKER_URL" in problem


def test_every_pool_the_assets_use_has_a_limit_set_at_start():
    from taxi_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    pools = {a.node_def.pool for a in graph.assets_defs if a.is_executable and a.node_def.pool is not None}
    assert pools and pools <= set(serve.POOL_LIMITS), pools


def test_the_launcher_supports_run_monitoring():
    import dagster as dg
    from dagster._core.launcher import WorkerStatus
    from dagster._core.test_utils import create_run_for_test
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
    from taxi_celery import CELERY_WORKER_TAG, TaxiCeleryRunLauncher

    launcher = TaxiCeleryRunLauncher(default_queue="dagster", broker="redis://127.0.0.1:1/0", backend=None)
    assert launcher.supports_check_run_worker_health
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="j", tags={DAGSTER_CELERY_TASK_ID_TAG: "t"})
        # No worker recorded yet: the run is still being picked up.
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        assert CELERY_WORKER_TAG not in run.tags


# The broker (deploy/broker.py): refused or warned about from its URL alone, before any connection.
import broker  # noqa: E402


@pytest.mark.parametrize(
    ("url", "refused", "warned"),
    [
        ("redis://127.0.0.1:6379/0", False, False),  # loopback: the host's own users only
        ("redis://localhost:6379/0", False, False),
        ("redis://[::1]:6379/0", False, False),
        ("redis://10.255.255.1:6379/0", True, False),  # anyone on the network could write to it
        ("redis://taxi@broker.example:6379/0", True, False),  # a user but no password
        ("redis://taxi:pw@10.255.255.1:6379/0", False, True),  # the password crosses in clear
        ("rediss://taxi:pw@10.255.255.1:6380/0", False, True),  # TLS without verifying the server
        ("rediss://taxi:pw@10.255.255.1:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem", False, False),
        ("rediss://taxi:pw@10.255.255.1:6380/0?ssl_cert_reqs=CERT_REQUIRED", False, False),
    ],
)
def test_a_broker_url_is_judged_before_any_connection(url, refused, warned):
    endpoint = broker.parse(broker.BROKER, url)
    refusal, warning = broker.policy(endpoint)
    assert bool(refusal) == refused and bool(warning) == warned, (refusal, warning)
    for line in filter(None, (refusal, warning)):
        assert "\n" not in line and broker.BROKER in line and endpoint.host in line and "pw" not in line


def test_a_bad_broker_url_is_one_line_without_the_password():
    # `#` starts a fragment: the URL's port would be read as "se"; the message echoes no part of it
    problem = broker.parse(broker.BROKER, "redis://taxi:se#cret@10.255.255.1:6379/0")
    assert isinstance(problem, str) and "\n" not in problem and broker.BROKER in problem
    assert "'se'" not in problem and "cret" not in problem and "taxi" not in problem


@pytest.mark.slow
@pytest.mark.skipif(server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)")
@pytest.mark.parametrize("script", ["serve.py", "worker.py"])
def test_a_non_loopback_broker_without_a_password_is_refused_at_start(tmp_path, script):
    """make serve and make worker with a broker on another host and no password: one line on
    stderr naming the setting, host and port; exit 2; nothing started (no DAGSTER_HOME written)."""
    with postgres_cluster(tmp_path / "pg") as pg_url:
        env = {
            **os.environ,
            "DAGSTER_PG_URL": pg_url,
            "DAGSTER_CELERY_BROKER_URL": "redis://192.0.2.10:6379/0",  # TEST-NET-1: routed nowhere
            "DAGSTER_HOME": str(tmp_path / "home"),
            "TAXI_MIN_FREE_MB": "0",  # the low-disk warning is a line of its own, not this test's
            "TAXI_DATA_DIR": str(tmp_path / "data"),
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / script)], env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "DAGSTER_CELERY_BROKER_URL" in lines[0] and "192.0.2.10:6379" in lines[0] and "no password" in lines[0]
    assert not list((tmp_path / "home").iterdir())  # nothing written, nothing started (the home is made first)
    assert time.monotonic() - started < 60


def test_the_workers_run_this_modules_tasks():
    """With Dagster's internals there (CELERY in taxi_assets/dagster_internals.py, checked by
    test_dagster_internals.py), the workers' app runs this module's tasks under dagster-celery's
    names (a replayed task is refused by them), not dagster-celery's own."""
    import taxi_celery

    assert taxi_celery.INTERNALS is not None
    taxi_celery.app.finalize()
    for name in ("execute_job", "resume_job"):
        task = taxi_celery.app.tasks[name]
        assert task.run.__module__ == "taxi_celery" and task.track_started, name


def test_the_docs_give_the_tested_redis_acl():
    from taxi_assets_harness.redis import CELERY_ACL

    assert CELERY_ACL in " ".join((ROOT / "docs" / "deploy.md").read_text().split())
